"""The compositional holdout: the held-out combinations really leave training, and every value stays in it."""

import itertools

import numpy as np
import pytest

from engine.evaluation.compositional import choose_holdout, choose_seen, holdout_mask


def grid(classes: int, colours: int, patterns: int, per: int = 5) -> np.ndarray:
    """Every (class, colour, pattern) combination, ``per`` photos each."""
    combos = np.array(list(itertools.product(range(classes), range(colours), range(patterns))))
    return np.repeat(combos, per, axis=0)


def test_held_out_combinations_leave_training_and_nothing_else_does():
    codes = grid(4, 5, 3)
    held = choose_holdout(codes, 6, seed=3)
    assert held.shape == (6, 3) and len(np.unique(held, axis=0)) == 6
    removed = holdout_mask(codes, held)
    assert removed.sum() == 6 * 5  # exactly the photos of the held-out combinations
    training = {tuple(c) for c in codes[~removed]}
    assert not training & {tuple(c) for c in held}
    assert len(training) == 4 * 5 * 3 - 6  # every other combination stays
    for a, n in enumerate((4, 5, 3)):  # every single value is still seen
        assert set(codes[~removed, a]) == set(range(n))


def test_the_draw_is_seeded():
    codes = grid(4, 5, 3)
    assert np.array_equal(choose_holdout(codes, 5, seed=1), choose_holdout(codes, 5, seed=1))
    assert not np.array_equal(choose_holdout(codes, 5, seed=1), choose_holdout(codes, 5, seed=2))


def test_a_combination_that_alone_holds_a_value_is_never_held_out():
    # colour 2 appears only with class 0, pattern 0: holding it out would test an unseen value, not a combination
    codes = np.concatenate([grid(2, 2, 2), np.repeat([[0, 2, 0]], 9, axis=0)])
    for seed in range(20):
        held = choose_holdout(codes, 3, seed=seed)
        assert [0, 2, 0] not in held.tolist()


def test_rare_combinations_are_not_drawn_and_an_impossible_holdout_says_so():
    rare = np.concatenate([grid(2, 2, 1, per=5)[:15], np.array([[1, 1, 0]])])  # (1, 1, 0) has a single photo
    for seed in range(10):
        assert [1, 1, 0] not in choose_holdout(rare, 1, seed=seed, min_items=4).tolist()
    # a 2x2 grid can lose at most 2 combinations with every value kept
    with pytest.raises(ValueError, match="only 2 combinations"):
        choose_holdout(grid(2, 2, 1), 3)


def test_each_seen_comparison_is_in_training_and_one_value_away_from_its_held_out_partner():
    codes = grid(4, 5, 3)
    held = choose_holdout(codes, 6, seed=0)
    seen = choose_seen(codes, held, seed=0)
    assert len(seen) == 6 and len(np.unique(seen, axis=0)) == 6
    assert not holdout_mask(seen, held).any()
    assert ((seen != held).sum(axis=1) == 1).all()
    assert holdout_mask(codes, seen).sum() == 6 * 5
