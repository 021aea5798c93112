"""The index benchmark's parts, at toy sizes (the figures themselves come from ``vitrine bench index``)."""

import numpy as np
import pytest

from engine.benchmarks.index import IndexBenchConfig, render, run_index_benchmark, vectors_around


def test_vectors_around_centres_are_unit_length_and_near_their_centre():
    rng = np.random.default_rng(0)
    centres = 3 * np.eye(4, 16, dtype=np.float32)
    x = vectors_around(centres, 500, rng)
    assert x.shape == (500, 16) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    assert np.all(np.max(x @ centres.T, axis=1) > 0.5)  # each vector leans towards one centre


def test_benchmark_reports_each_index_type_with_recall_memory_and_speed(tmp_path):
    cfg = IndexBenchConfig(items=12_000, dim=16, queries=60, single_queries=20, clusters=40, workdir=tmp_path)
    report = run_index_benchmark(cfg)
    rows = {r["type"]: r for r in report["rows"]}
    assert list(rows) == ["flat", "ivf", "ivfpq"]
    assert rows["flat"]["recall@10"] == 1.0 and rows["flat"]["nprobe"] is None
    assert rows["ivf"]["refine_factor"] is None and rows["ivfpq"]["refine_factor"] >= 16
    assert rows["ivf"]["recall@10"] >= 0.95 and rows["ivfpq"]["recall@10"] >= 0.9
    assert rows["flat"]["file_bytes_per_item"] >= 4 * 16  # the float vectors themselves
    # IVF-PQ scans d/4 one-byte codes and an int64 id per item; its exact vectors are what the file adds
    assert rows["ivfpq"]["codes_bytes_per_item"] < 16 < rows["ivfpq"]["file_bytes_per_item"]
    for r in rows.values():
        assert r["qps_single_thread"] > 0 and r["qps_batched"] > 0 and r["build_seconds"] >= 0
    assert list(tmp_path.iterdir()) == []  # the saved indexes are removed
    text = render(report)
    assert "IVF-PQ" in text and "recall@10" in text and "12,000 items × 16-d" in text


def test_unknown_index_type_is_refused():
    with pytest.raises(ValueError, match="types"):
        IndexBenchConfig(types=("flat", "ivf-pq"))
