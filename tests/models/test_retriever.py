import numpy as np
import pytest

from models.retriever import FaissRetriever, RetrieverConfig


def clustered(n: int, d: int, clusters: int, seed: int) -> np.ndarray:
    """Vectors around random centres, like faiss's SyntheticDataset: neighbours are well defined."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    x = centres[rng.integers(0, clusters, n)] + 0.3 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def exact_top(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(q @ x.T), axis=1)[:, :k]


@pytest.mark.parametrize("index_type,min_recall", [("flat", 1.0), ("ivf", 0.95), ("hnsw", 0.95)])
def test_recall_at_10_against_exact_search(index_type, min_recall):
    x = clustered(5000, 32, 50, seed=0)
    q = clustered(200, 32, 50, seed=1)
    r = FaissRetriever.build(x, np.arange(len(x)).astype(str), RetrieverConfig(index_type=index_type))
    _, rows = r.search(q, 10)
    truth = exact_top(x, q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, truth, strict=True)])
    assert recall >= min_recall


def test_auto_picks_flat_for_small_and_ivf_for_large_catalogues():
    cfg = RetrieverConfig()
    assert cfg.resolved_type(1000) == "flat"
    assert cfg.resolved_type(1_000_000) == "ivf"


def test_ivf_calibrates_nprobe_to_its_recall_target_and_keeps_it_through_save(tmp_path):
    x = clustered(8000, 32, 80, seed=3)
    loose = FaissRetriever.build(
        x, np.arange(len(x)).astype(str), RetrieverConfig(index_type="ivf", ivf_target_recall=0.5)
    )
    tight = FaissRetriever.build(
        x, np.arange(len(x)).astype(str), RetrieverConfig(index_type="ivf", ivf_target_recall=0.99)
    )
    assert 1 <= loose.index.nprobe < tight.index.nprobe <= tight.index.nlist
    tight.save(tmp_path)
    assert FaissRetriever.load(tmp_path).index.nprobe == tight.index.nprobe


def test_save_load_round_trip_gives_same_answers(tmp_path):
    x = clustered(300, 16, 10, seed=2)
    ids = np.array([f"I{k:04d}" for k in range(300)])
    r = FaissRetriever.build(x, ids)
    r.save(tmp_path)
    back = FaissRetriever.load(tmp_path)
    s1, r1 = r.search(x[:5], 3)
    s2, r2 = back.search(x[:5], 3)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_allclose(s1, s2)
    assert list(back.item_ids[r2[:, 0]]) == list(ids[:5])  # each vector's nearest item is itself


def test_query_of_wrong_dimension_is_refused():
    r = FaissRetriever.build(clustered(10, 8, 2, 0), np.arange(10).astype(str))
    with pytest.raises(ValueError, match="dimensions"):
        r.search(np.zeros((1, 4), dtype=np.float32), 1)


@pytest.mark.parametrize("index_type", ["flat", "ivf", "hnsw"])
def test_every_index_type_gives_stored_vectors_back_also_after_loading(index_type, tmp_path):
    x = clustered(2000, 16, 20, seed=4)
    r = FaissRetriever.build(x, np.arange(len(x)).astype(str), RetrieverConfig(index_type=index_type))
    r.save(tmp_path)
    back = FaissRetriever.load(tmp_path)  # a loaded inverted file has no row map until the retriever builds one
    np.testing.assert_allclose(back.stored_vector(7), x[7], atol=1e-6)
    np.testing.assert_allclose(back.stored_vectors()[[0, 1999]], x[[0, 1999]], atol=1e-6)
