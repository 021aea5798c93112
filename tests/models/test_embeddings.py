import numpy as np
import pytest
import scipy.sparse as sp

from engine.recommend.factors import fit_embeddings
from models.embeddings import EmbeddingConfig, EmbeddingModel


def checkerboard(n: int = 40) -> tuple[sp.csr_matrix, np.ndarray]:
    """User u likes every item of its parity except item u itself (the held-out diagonal)."""
    u, i = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    liked = (u % 2 == i % 2) & (u != i)
    return sp.csr_matrix(liked.astype(np.float32)), liked


def _ids(prefix: str, n: int) -> np.ndarray:
    return np.array([f"{prefix}{k}" for k in range(n)])


@pytest.mark.parametrize("algorithm", ["als", "bpr"])
def test_checkerboard_held_out_diagonal_is_recommended_first(algorithm):
    m, liked = checkerboard()
    cfg = EmbeddingConfig(
        algorithm=algorithm,
        factors=8,
        iterations=30 if algorithm == "als" else 200,
        regularization=0.01,
        learning_rate=0.05,
    )
    model = fit_embeddings(m, _ids("u", 40), _ids("i", 40), cfg, seed=3, show_progress=False)
    hits = 0
    for u in range(40):
        top, _ = model.recommend(model.user_factors[u], 1, exclude=np.flatnonzero(liked[u]))
        hits += int(top[0] == u)
    assert hits >= 38  # every user's single unseen same-parity item is the diagonal


def test_bpr_on_one_thread_gives_the_same_factors_for_a_seed():
    rng = np.random.default_rng(0)
    m = sp.random(2000, 500, density=0.02, format="csr", dtype=np.float32, random_state=rng)
    m.data[:] = 1.0
    cfg = EmbeddingConfig(algorithm="bpr", factors=16, iterations=20, learning_rate=0.05, threads=1)
    runs = [fit_embeddings(m, _ids("u", 2000), _ids("i", 500), cfg, seed=7, show_progress=False) for _ in range(2)]
    np.testing.assert_array_equal(runs[0].item_factors, runs[1].item_factors)
    np.testing.assert_array_equal(runs[0].user_factors, runs[1].user_factors)


def test_thread_count_must_be_a_whole_number_of_threads():
    with pytest.raises(ValueError, match="threads"):
        EmbeddingConfig(threads=-1)


def test_fold_in_matches_implicit_recalculate_user():
    from implicit.cpu.als import AlternatingLeastSquares

    m, _ = checkerboard(30)
    m = m.multiply(np.random.default_rng(0).uniform(0.5, 3.0, m.shape)).tocsr().astype(np.float32)
    cfg = EmbeddingConfig(factors=6, iterations=10, regularization=0.1, alpha=2.0)
    raw = AlternatingLeastSquares(factors=6, iterations=10, regularization=0.1, alpha=2.0, random_state=0, use_cg=False)
    raw.fit(m, show_progress=False)
    model = EmbeddingModel(cfg, raw.user_factors, raw.item_factors, _ids("u", 30), _ids("i", 30))
    row = m.getrow(5)
    ours = model.fold_in(row.indices, row.data)
    theirs = np.asarray(raw.recalculate_user(5, m[5])).ravel()
    np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-4)


def test_fold_in_of_a_new_user_recommends_their_side_of_the_board():
    m, _ = checkerboard()
    # The board has rank 2; a few factors recover it, many let ALS fit the held-out holes too.
    model = fit_embeddings(
        m, _ids("u", 40), _ids("i", 40), EmbeddingConfig(factors=4, iterations=20), show_progress=False
    )
    evens = np.array([0, 2, 4, 6, 8])
    vec = model.fold_in(evens, np.ones(len(evens)))
    top, _ = model.recommend(vec, 10, exclude=evens)
    assert (top % 2 == 0).all()


def test_save_load_round_trip(tmp_path):
    m, _ = checkerboard(10)
    model = fit_embeddings(
        m, _ids("u", 10), _ids("i", 10), EmbeddingConfig(factors=4, iterations=3), show_progress=False
    )
    model.save(tmp_path)
    back = EmbeddingModel.load(tmp_path)
    assert back.config == model.config
    np.testing.assert_array_equal(back.item_factors, model.item_factors)
    np.testing.assert_array_equal(back.user_ids, model.user_ids)
    assert back.user_index("u3") == 3 and back.user_index("nobody") == -1


def test_config_rejects_bad_values_with_a_message():
    with pytest.raises(ValueError, match="algorithm"):
        EmbeddingConfig(algorithm="svd")
    with pytest.raises(ValueError, match="factors"):
        EmbeddingConfig(factors=0)


def test_loading_a_config_with_an_unknown_key_fails(tmp_path):
    m, _ = checkerboard(10)
    fit_embeddings(m, _ids("u", 10), _ids("i", 10), EmbeddingConfig(factors=4, iterations=2), show_progress=False).save(
        tmp_path
    )
    (tmp_path / "config.json").write_text('{"algorithm": "als", "factor": 4}')
    with pytest.raises(ValueError, match="unknown keys \\['factor'\\]"):
        EmbeddingModel.load(tmp_path)
