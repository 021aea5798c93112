"""Private ALS: user-level DP item factors (Chien et al. 2021), with known answers."""

import math

import numpy as np
import pytest
import scipy.sparse as sp

from engine.recommend.factors import fit_embeddings
from engine.recommend.private_als import (
    PrivateALSConfig,
    _solve_users,
    bound_contributions,
    fit_private_als,
    gaussian_epsilon,
    noise_multiplier,
)
from models.embeddings import EmbeddingConfig, EmbeddingModel


def two_blocks(n_users: int = 400, n_items: int = 40, seen: int = 6, seed: int = 0):
    """Shoppers of the first half buy only items of the first half, the others only the second half; each has
    ``seen`` training purchases and one held-out purchase of their own half."""
    rng = np.random.default_rng(seed)
    half = n_items // 2
    rows, cols, held = [], [], []
    for u in range(n_users):
        own = rng.permutation(half) + (half if u >= n_users // 2 else 0)
        rows += [u] * seen
        cols += list(own[:seen])
        held.append(own[seen])
    matrix = sp.csr_matrix((np.full(len(rows), 10.0), (rows, cols)), shape=(n_users, n_items))
    return matrix, np.array(held)


def hit_rate(user_factors: np.ndarray, item_factors: np.ndarray, matrix: sp.csr_matrix, held: np.ndarray, k: int = 5):
    scores = user_factors @ item_factors.T
    scores[matrix.nonzero()] = -np.inf  # recommend what they have not bought
    top = np.argsort(-scores, axis=1)[:, :k]
    return float((top == held[:, None]).any(axis=1).mean())


def fit(matrix, config, seed=0):
    ids_u, ids_i = np.arange(matrix.shape[0]).astype(str), np.arange(matrix.shape[1]).astype(str)
    return fit_private_als(matrix, ids_u, ids_i, config, seed=seed)


NOISELESS = PrivateALSConfig(epsilon=None, factors=8, iterations=5, top_items=40)


def test_without_noise_it_recommends_like_non_private_als():
    matrix, held = two_blocks()
    ours = fit(matrix, NOISELESS).model
    ids_u, ids_i = np.arange(matrix.shape[0]).astype(str), np.arange(matrix.shape[1]).astype(str)
    als = fit_embeddings(matrix, ids_u, ids_i, EmbeddingConfig(factors=8, iterations=5), seed=0, show_progress=False)
    ours_hits = hit_rate(ours.user_factors, ours.item_factors, matrix, held)
    als_hits = hit_rate(als.user_factors, als.item_factors, matrix, held)
    # the held-out item is one of 14 unseen items of the shopper's half: 5 picks from the right half hit it 5/14
    # of the time (0.36), 5 picks from all 34 unseen items 5/34 (0.15)
    assert als_hits > 0.3 and ours_hits > 0.3 and abs(ours_hits - als_hits) < 0.06


def test_a_huge_budget_converges_to_the_noiseless_fit_and_a_small_one_costs_quality():
    matrix, held = two_blocks(n_users=1000)
    noiseless = fit(matrix, NOISELESS)
    loose = fit(matrix, PrivateALSConfig(**{**vars(NOISELESS), "epsilon": 1e6}))
    tight = fit(matrix, PrivateALSConfig(**{**vars(NOISELESS), "epsilon": 0.05}))
    v0, v1 = noiseless.model.item_factors, loose.model.item_factors
    assert np.linalg.norm(v1 - v0) < 0.05 * np.linalg.norm(v0)
    assert loose.epsilon <= 1e6 and noiseless.epsilon is None and tight.epsilon == pytest.approx(0.05, rel=0.01)
    quality = hit_rate(noiseless.model.user_factors, noiseless.model.item_factors, matrix, held)
    noisy = hit_rate(tight.model.user_factors, tight.model.item_factors, matrix, held)
    assert noisy < quality - 0.1


def test_the_same_seed_gives_the_same_factors():
    matrix, _ = two_blocks(n_users=100)
    config = PrivateALSConfig(**{**vars(NOISELESS), "epsilon": 2.0})
    a, b = fit(matrix, config, seed=3), fit(matrix, config, seed=3)
    np.testing.assert_array_equal(a.model.item_factors, b.model.item_factors)
    assert not np.array_equal(a.model.item_factors, fit(matrix, config, seed=4).model.item_factors)


def test_the_user_step_is_implicit_als_fold_in():
    """Each shopper's own vector solves Hu et al.'s eq. 4, as the embedding model's fold-in does."""
    rng = np.random.default_rng(1)
    items = rng.normal(size=(12, 4))
    strengths = sp.csr_matrix(np.where(rng.random((3, 12)) < 0.3, rng.random((3, 12)) * 5, 0.0))
    config = PrivateALSConfig(epsilon=None, factors=4, user_regularization=0.05)
    ours = _solve_users(strengths, items, config)
    model = EmbeddingModel(
        EmbeddingConfig(factors=4, regularization=0.05, alpha=config.alpha),
        np.zeros((1, 4)),
        items.astype(np.float32),
        np.array(["u"]),
        np.arange(12).astype(str),
    )
    for u in range(3):
        row = strengths.getrow(u)
        np.testing.assert_allclose(ours[u], model.fold_in(row.indices, row.data), rtol=1e-3, atol=1e-4)


def test_contributions_are_bounded_to_the_strongest_items_and_clipped():
    matrix = sp.csr_matrix(np.array([[1.0, 50.0, 3.0, 0.0, 7.0], [0.0, 2.0, 0.0, 0.0, 0.0]]))
    bounded = bound_contributions(
        matrix, PrivateALSConfig(max_items_per_user=2, max_strength=5.0), np.random.default_rng(0)
    )
    np.testing.assert_array_equal(bounded.toarray(), [[0.0, 5.0, 0.0, 0.0, 5.0], [0.0, 2.0, 0.0, 0.0, 0.0]])


def test_the_accountant_matches_the_gaussian_mechanism_and_spends_at_most_the_budget():
    # one release at σ = 1: RDP α/2, the known closed form; a bigger σ always spends less
    assert gaussian_epsilon(1.0, 1, 1e-5) == pytest.approx(
        min(a / 2 + math.log1p(-1 / a) - (math.log(1e-5) + math.log(a)) / (a - 1) for a in np.linspace(1.01, 10, 200)),
        rel=1e-6,
    )
    assert gaussian_epsilon(2.0, 6, 1e-5) < gaussian_epsilon(1.0, 6, 1e-5)
    for eps in (1.0, 8.0):
        sigma, spent = noise_multiplier(PrivateALSConfig(epsilon=eps))
        assert eps * 0.99 <= spent <= eps and sigma > 0
    assert noise_multiplier(PrivateALSConfig(epsilon=None)) == (0.0, None)
