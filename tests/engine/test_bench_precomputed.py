"""``vitrine bench precomputed`` on the tiny bundle: it serves the stored sets, finds them equal to fresh ones,
and times both paths; a shopper the job did not render is counted as made afresh."""

from __future__ import annotations

from engine.artifacts.bundle import load_bundle
from engine.batch.image_sets import job_config, render_sets
from engine.benchmarks.precomputed import run_precomputed_benchmark
from engine.serving.personaliser import Personaliser
from engine.serving.precomputed import SetParams, known_shoppers
from engine.serving.precomputed_store import SqlitePrecomputedStore

KEY = b"bench-precomputed-key-0123456789"


def test_the_benchmark_serves_stored_sets_equal_to_fresh_ones(trained_artifacts, tmp_path):
    root, version = trained_artifacts
    params = SetParams(n=3, neighbours=2)
    job = Personaliser(load_bundle(root / version), job_config(params), key=KEY)
    first = known_shoppers(job)[:2]
    store = SqlitePrecomputedStore(tmp_path / "sets.sqlite")
    store.put_many(version, [(s, params.key(job_config(params)), e) for s, e in render_sets(job, first, params)])
    report = run_precomputed_benchmark(root, store=store, key=KEY, requests=3, n=3, neighbours=2)
    figures = report.to_dict()
    assert figures["requests"] == 3 and figures["hits"] == 2 and figures["equal_to_fresh"] == 2
    assert figures["stored"]["p50_ms"] > 0 and figures["fresh"]["p50_ms"] > 0
    assert "equal to the fresh set: 2/2" in report.render()
