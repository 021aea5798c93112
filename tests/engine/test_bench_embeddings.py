"""The embedding speed benchmark's parts, at toy sizes (the figures themselves come from the command)."""

import numpy as np
import pytest

from engine.benchmarks.embeddings import (
    EmbeddingBenchConfig,
    clustered_vectors,
    render,
    retrieval,
    run_embedding_benchmark,
    synthetic_matrix,
)


def test_synthetic_matrix_has_the_asked_shape_and_a_popularity_skew():
    m = synthetic_matrix(500, 200, 5000, seed=0)
    assert m.shape == (500, 200) and 0 < m.nnz <= 5000
    per_item = np.sort(np.asarray((m > 0).sum(axis=0)).ravel())[::-1]
    assert per_item[:20].sum() > 3 * per_item[-20:].sum()


def test_clustered_vectors_are_unit_length():
    x = clustered_vectors(100, 16, seed=0, clusters=5)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)


def test_benchmark_runs_end_to_end_and_reports_every_target():
    cfg = EmbeddingBenchConfig(
        users=300,
        items=120,
        interactions=3000,
        factors=8,
        iterations=2,
        repeats=1,
        sessions=50,
        faiss_items=6000,
        index_type="ivf",
        faiss_queries=50,
    )
    report = run_embedding_benchmark(cfg)
    assert report["training"]["overhead"] > -1.0
    raw = report["training"]["raw_implicit_seconds"]
    assert report["training"]["raw_seconds_per_iteration"] == pytest.approx(np.median(raw) / 2, abs=1e-3)
    assert report["nnz"] == synthetic_matrix(300, 120, 3000, seed=0).nnz and report["shape"] == [300, 120]
    assert report["session"]["p99_ms"] >= report["session"]["p50_ms"] > 0
    r = report["retrieval"]
    assert r["index_type"] == "ivf"
    assert r["recall@10"] >= 0.95  # the calibration's target is 0.97 on its own queries
    text = render(report)
    assert "overhead" in text and "recall@10" in text and "q/s" in text


def test_auto_index_type_follows_the_catalogue_size():
    from models.retriever import RetrieverConfig

    assert RetrieverConfig().resolved_type(2000, 64) == "flat"
    assert RetrieverConfig().resolved_type(1_000_000, 64) == "ivf"


def test_retrieval_of_a_small_catalogue_is_exact():
    r = retrieval(EmbeddingBenchConfig(faiss_items=2000, faiss_queries=20), d=16)
    assert r["index_type"] == "flat" and r["recall@10"] == 1.0
