import gc
import json
import logging
from dataclasses import replace

import faiss
import numpy as np
import pytest

from models.retriever import (
    FaissRetriever,
    RetrieverConfig,
    ivf_flat_bytes_per_item,
    pq_subquantizers,
)


@pytest.fixture(autouse=True)
def _one_faiss_thread():
    """The indexes here are small: one OpenMP thread is as fast, and on a shared machine it does not spin
    waiting for a busy second core."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


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


def test_ivfpq_with_exact_reranking_reaches_its_recall_against_exact_search():
    # 12k clustered 16-d vectors: IVF-PQ holds 4 one-byte codes per vector (the default d/4), whose
    # similarities alone miss much of the true top 10; the exact re-ranking of a 16·k shortlist restores it
    x = clustered(12_000, 16, 60, seed=5)
    q = clustered(200, 16, 60, seed=6)
    r = FaissRetriever.build(x, np.arange(len(x)).astype(str), RetrieverConfig(index_type="ivfpq"))
    assert r.index_type == "ivfpq" and isinstance(r.index, faiss.IndexRefine)
    _, rows = r.search(q, 10)
    truth = exact_top(x, q, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, truth, strict=True)]) >= 0.95
    codes_only = FaissRetriever.build(
        x, np.arange(len(x)).astype(str), RetrieverConfig(index_type="ivfpq", pq_refine="none", ivf_nprobe=r.nprobe)
    )
    _, rows = codes_only.search(q, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, truth, strict=True)]) < 0.9


def test_ivfpq_calibration_widens_the_shortlist_where_more_cells_stop_helping():
    # two 6-bit codes per 16-d vector are coarse: at 16·k candidates the true top 10 is often not in the
    # shortlist however many cells are scanned, so the calibration doubles the shortlist instead
    x = clustered(6000, 16, 20, seed=11)
    q = clustered(200, 16, 20, seed=12)
    config = RetrieverConfig(index_type="ivfpq", pq_m=2, pq_nbits=6)
    r = FaissRetriever.build(x, np.arange(len(x)).astype(str), config)
    assert r.refine_factor is not None and r.refine_factor > 16
    _, rows = r.search(q, 10)
    truth = exact_top(x, q, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, truth, strict=True)]) >= 0.95
    fixed = FaissRetriever.build(x, np.arange(len(x)).astype(str), replace(config, pq_refine_factor=16))
    assert fixed.refine_factor == 16  # a factor that is set is kept


def test_ivfpq_codes_only_warns_when_its_recall_target_is_out_of_reach(caplog):
    x = clustered(6000, 16, 40, seed=7)
    config = RetrieverConfig(index_type="ivfpq", pq_refine="none", pq_m=2, pq_nbits=6)
    with caplog.at_level(logging.WARNING, logger="models.retriever"):
        r = FaissRetriever.build(x, np.arange(len(x)).astype(str), config)
    assert "below the target" in caplog.text and "pq_refine" in caplog.text
    assert r.nprobe is not None and r.nprobe < faiss.extract_index_ivf(r.index).nlist  # it stopped at the plateau


def test_ivfpq_subquantizers_follow_the_dimension():
    assert [pq_subquantizers(d) for d in (64, 128, 100, 50, 7, 2)] == [16, 32, 25, 10, 1, 1]
    with pytest.raises(ValueError, match="does not divide"):
        FaissRetriever.build(
            clustered(1000, 16, 10, 0), np.arange(1000).astype(str), RetrieverConfig(index_type="ivfpq", pq_m=5)
        )


def test_ivfpq_refuses_too_few_vectors_to_train_its_codebooks():
    with pytest.raises(ValueError, match="at least"):
        FaissRetriever.build(clustered(200, 16, 4, 0), np.arange(200).astype(str), RetrieverConfig(index_type="ivfpq"))


def test_auto_picks_flat_then_ivf_flat_then_ivfpq_by_catalogue_size():
    cfg = RetrieverConfig()
    assert cfg.resolved_type(1000, 64) == "flat"
    assert cfg.resolved_type(50_000, 64) == "flat"
    assert cfg.resolved_type(1_000_000, 64) == "ivf"  # 272 MB of IVF-Flat: under the 512 MiB budget
    assert cfg.resolved_type(10_000_000, 64) == "ivfpq"
    # the boundary is memory, so wider vectors move to IVF-PQ sooner
    largest_ivf = cfg.ivf_flat_max_bytes // ivf_flat_bytes_per_item(64)
    assert cfg.resolved_type(largest_ivf, 64) == "ivf" and cfg.resolved_type(largest_ivf + 1, 64) == "ivfpq"
    assert cfg.resolved_type(1_000_000, 512) == "ivfpq"
    assert RetrieverConfig(index_type="ivfpq").resolved_type(10, 64) == "ivfpq"  # an explicit type wins


def test_auto_builds_the_type_it_resolves_and_records_it(tmp_path):
    x = clustered(4000, 16, 40, seed=8)
    config = RetrieverConfig(flat_max_items=1000, ivf_flat_max_bytes=2000 * ivf_flat_bytes_per_item(16), pq_nbits=6)
    r = FaissRetriever.build(x, np.arange(len(x)).astype(str), config)
    assert r.index_type == "ivfpq" and r.config.index_type == "auto"
    r.save(tmp_path)
    info = json.loads((tmp_path / "index.json").read_text())
    assert info == {
        "schema_version": 2,
        "index_type": "ivfpq",
        "items": 4000,
        "dim": 16,
        "nprobe": r.nprobe,
        "refine_factor": r.refine_factor,
    }
    assert FaissRetriever.load(tmp_path).index_type == "ivfpq"


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


def test_ivfpq_save_load_round_trip_gives_same_answers_from_memory_mapped_vectors(tmp_path):
    x = clustered(4000, 16, 40, seed=9)
    ids = np.array([f"I{k:05d}" for k in range(len(x))])
    r = FaissRetriever.build(x, ids, RetrieverConfig(index_type="ivfpq", pq_refine_factor=8, pq_nbits=6))
    r.save(tmp_path)
    back = FaissRetriever.load(tmp_path)
    assert back.index_type == "ivfpq" and back.nprobe == r.nprobe and back.index.k_factor == 8
    s1, r1 = r.search(x[:20], 10)
    s2, r2 = back.search(x[:20], 10)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_allclose(s1, s2)
    assert list(back.item_ids[r2[:, 0]]) == list(ids[:20])  # exact re-ranking: each vector finds itself first
    np.testing.assert_allclose(back.stored_vectors()[[0, 3999]], x[[0, 3999]], atol=1e-6)


def test_a_folder_saved_before_index_json_loads_with_its_type_read_from_faiss(tmp_path):
    # schema 1 folders (config.json, items.faiss, item_ids.npz) were written for flat, ivf and hnsw only
    x = clustered(3000, 16, 20, seed=10)
    for kind in ("flat", "ivf", "hnsw"):
        r = FaissRetriever.build(x, np.arange(len(x)).astype(str), RetrieverConfig(index_type=kind))
        r.save(tmp_path / kind)
        (tmp_path / kind / "index.json").unlink()
        back = FaissRetriever.load(tmp_path / kind)
        assert back.index_type == kind
        np.testing.assert_array_equal(back.search(x[:5], 3)[1], r.search(x[:5], 3)[1])


def test_an_index_json_that_disagrees_with_the_faiss_file_is_refused(tmp_path):
    r = FaissRetriever.build(clustered(300, 16, 10, 0), np.arange(300).astype(str))
    r.save(tmp_path)
    info = json.loads((tmp_path / "index.json").read_text())
    (tmp_path / "index.json").write_text(json.dumps({**info, "index_type": "hnsw"}))
    with pytest.raises(ValueError, match="rebuild"):
        FaissRetriever.load(tmp_path)
    (tmp_path / "index.json").write_text(json.dumps({**info, "schema_version": 3}))
    with pytest.raises(ValueError, match="schema_version 3"):
        FaissRetriever.load(tmp_path)


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


@pytest.mark.parametrize("index_type", ["flat", "ivf", "ivfpq", "hnsw"])
def test_every_index_type_gives_stored_vectors_back_also_after_loading(index_type, tmp_path):
    x = clustered(2000, 16, 20, seed=4)
    r = FaissRetriever.build(x, np.arange(len(x)).astype(str), RetrieverConfig(index_type=index_type))
    r.save(tmp_path)
    back = FaissRetriever.load(tmp_path)  # a loaded inverted file has no row map until the retriever builds one
    np.testing.assert_allclose(back.stored_vector(7), x[7], atol=1e-6)
    np.testing.assert_allclose(back.stored_vectors()[[0, 1999]], x[[0, 1999]], atol=1e-6)


@pytest.mark.parametrize("index_type", ["flat", "ivfpq"])
def test_stored_vectors_are_a_read_only_view_that_keeps_the_index_alive(index_type, tmp_path):
    """Flat and re-ranked IVF-PQ hold the float vectors in one block: the vectors come back as a view of it (a
    loaded IVF-PQ maps it from its file), not a copy per worker. Writing is refused, and the view (or a slice of
    it) outlives the retriever it came from."""
    x = clustered(2000, 16, 20, seed=4)
    FaissRetriever.build(x, np.arange(len(x)).astype(str), RetrieverConfig(index_type=index_type)).save(tmp_path)
    back = FaissRetriever.load(tmp_path)
    vectors = back.stored_vectors()
    assert not vectors.flags.owndata and not vectors.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        vectors[0, 0] = 1.0
    del back
    gc.collect()
    np.testing.assert_allclose(vectors[[0, 1999]], x[[0, 1999]], atol=1e-6)
    rows = vectors[10:20]
    del vectors
    gc.collect()
    np.testing.assert_allclose(rows, x[10:20], atol=1e-6)


def test_inverted_lists_give_a_read_only_copy(tmp_path):
    x = clustered(2000, 16, 20, seed=4)
    vectors = FaissRetriever.build(x, np.arange(len(x)).astype(str), RetrieverConfig(index_type="ivf")).stored_vectors()
    assert vectors.flags.owndata and not vectors.flags.writeable
