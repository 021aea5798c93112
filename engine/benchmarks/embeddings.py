"""``vitrine bench embeddings``: the speed of the embedding path, against raw implicit and brute force.

Three figures, each beside its target:

1. Training overhead: Vitrine's ``fit_embeddings`` (thread limits, validation, the wrapped model with its
   fold-in Gram matrix) against implicit's ``AlternatingLeastSquares.fit`` alone, on the same matrix and
   seed; the median of ``repeats`` runs each, interleaved so machine noise falls on both. Target ≤ 10%.
2. Session latency: fold-in of one session (``session_events`` items into a stored model) plus top-k over
   the catalogue, p50 / p99 over ``sessions`` sessions. Target p99 ≤ 10 ms.
3. Retrieval: the FAISS index type ``RetrieverConfig`` picks for ``faiss_items`` synthetic 64-d vectors
   (clustered, as item factors are), its build time, recall@10 against exact search, and queries per
   second against brute-force numpy (one matrix product and a partial sort per query batch).
   Target recall@10 ≥ 0.95.

The matrix is a demo store's or H&M's training matrix with ``--data``, otherwise a synthetic power-law
matrix of the given size.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from engine.recommend.factors import fit_embeddings, implicit_model
from engine.recommend.ranking import top_k
from models.embeddings import EmbeddingConfig
from models.retriever import FaissRetriever, RetrieverConfig

logger = logging.getLogger(__name__)

TARGET_OVERHEAD = 0.10
TARGET_SESSION_P99_MS = 10.0
TARGET_RECALL = 0.95


@dataclass(frozen=True, kw_only=True)
class EmbeddingBenchConfig:
    data: Path | None = None
    users: int = 50_000
    items: int = 20_000
    interactions: int = 1_000_000
    factors: int = 64
    iterations: int = 15
    threads: int = 0  # implicit's threads (0 = every core); BLAS is held to one thread, as implicit asks
    repeats: int = 3
    sessions: int = 2000
    session_events: int = 10
    k: int = 12
    faiss_items: int = 1_000_000
    faiss_queries: int = 2000
    index_type: str = "auto"  # what RetrieverConfig picks by size, or force "flat" / "ivf" / "hnsw"
    seed: int = 0


def synthetic_matrix(users: int, items: int, interactions: int, seed: int) -> sp.csr_matrix:
    """A user × item matrix with Zipf-like item popularity and user activity, strengths 1–5."""
    rng = np.random.default_rng(seed)
    item_p = 1.0 / np.arange(1, items + 1) ** 0.8
    user_p = 1.0 / np.arange(1, users + 1) ** 0.5
    u = rng.choice(users, interactions, p=user_p / user_p.sum())
    i = rng.permutation(items)[rng.choice(items, interactions, p=item_p / item_p.sum())]
    m = sp.csr_matrix((rng.integers(1, 6, interactions).astype(np.float32), (u, i)), shape=(users, items))
    m.sum_duplicates()
    return m


def _matrix(cfg: EmbeddingBenchConfig) -> tuple[sp.csr_matrix, str]:
    if cfg.data is None:
        m = synthetic_matrix(cfg.users, cfg.items, cfg.interactions, cfg.seed)
        return m, f"synthetic {m.shape[0]:,} users × {m.shape[1]:,} items, {m.nnz:,} non-zeros"
    from engine.recommend.baselines import build_interactions
    from features.readers import read_store
    from features.weighting import WeightingConfig

    data = build_interactions(read_store(cfg.data).events, WeightingConfig())
    m = data.matrix
    return m, f"{cfg.data}: {m.shape[0]:,} users × {m.shape[1]:,} items, {m.nnz:,} non-zeros"


def training_overhead(matrix: sp.csr_matrix, cfg: EmbeddingBenchConfig) -> dict:
    """Raw implicit against Vitrine's fit, and raw implicit's seconds per iteration (its whole ``fit`` over
    the iteration count, as implicit's own benchmarks report it)."""
    config = EmbeddingConfig(factors=cfg.factors, iterations=cfg.iterations, threads=cfg.threads)
    users = np.array([f"u{k}" for k in range(matrix.shape[0])])
    items = np.array([f"i{k}" for k in range(matrix.shape[1])])
    raw, ours = [], []
    for _ in range(cfg.repeats):
        t = time.perf_counter()
        with threadpool_limits(1, "blas"):
            implicit_model(config, cfg.seed).fit(matrix, show_progress=False)
        raw.append(time.perf_counter() - t)
        t = time.perf_counter()
        fit_embeddings(matrix, users, items, config, seed=cfg.seed, show_progress=False)
        ours.append(time.perf_counter() - t)
    overhead = float(np.median(ours) / np.median(raw) - 1.0)
    return {
        "raw_implicit_seconds": [round(x, 3) for x in raw],
        "vitrine_seconds": [round(x, 3) for x in ours],
        "raw_seconds_per_iteration": float(np.median(raw)) / cfg.iterations,
        "threads": cfg.threads,
        "overhead": overhead,
        "target": TARGET_OVERHEAD,
        "met": overhead <= TARGET_OVERHEAD,
    }


def session_latency(matrix: sp.csr_matrix, cfg: EmbeddingBenchConfig) -> dict:
    config = EmbeddingConfig(factors=cfg.factors, iterations=cfg.iterations, threads=cfg.threads)
    users = np.array([f"u{k}" for k in range(matrix.shape[0])])
    items = np.array([f"i{k}" for k in range(matrix.shape[1])])
    model = fit_embeddings(matrix, users, items, config, seed=cfg.seed, show_progress=False)
    rng = np.random.default_rng(cfg.seed)
    popularity = np.asarray((matrix > 0).sum(axis=0)).ravel().astype(np.float64) + 1.0
    p = popularity / popularity.sum()
    times = np.empty(cfg.sessions)
    for s in range(cfg.sessions):
        rows = np.unique(rng.choice(matrix.shape[1], cfg.session_events, p=p))
        strengths = rng.integers(1, 6, len(rows)).astype(np.float64)
        t = time.perf_counter()
        vector = model.fold_in(rows, strengths)
        top_k(model.scores(vector), cfg.k)
        times[s] = time.perf_counter() - t
    p99 = float(np.percentile(times, 99) * 1e3)
    return {
        "sessions": cfg.sessions,
        "events_per_session": cfg.session_events,
        "catalogue_items": matrix.shape[1],
        "p50_ms": float(np.percentile(times, 50) * 1e3),
        "p99_ms": p99,
        "target_p99_ms": TARGET_SESSION_P99_MS,
        "met": p99 <= TARGET_SESSION_P99_MS,
    }


def clustered_vectors(n: int, d: int, seed: int, *, clusters: int = 1000) -> np.ndarray:
    """Unit vectors around ``clusters`` centres: the shape item factors have (families of similar items)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _numpy_search(items: np.ndarray, queries: np.ndarray, k: int, batch: int = 256) -> np.ndarray:
    return np.concatenate([top_k(queries[s : s + batch] @ items.T, k) for s in range(0, len(queries), batch)])


def retrieval(cfg: EmbeddingBenchConfig, d: int = 64, k: int = 10) -> dict:
    items = clustered_vectors(cfg.faiss_items, d, cfg.seed)
    queries = clustered_vectors(cfg.faiss_queries, d, cfg.seed + 1)
    config = RetrieverConfig(index_type=cfg.index_type)
    t = time.perf_counter()
    retriever = FaissRetriever.build(items, np.arange(len(items)).astype(str), config)
    build = time.perf_counter() - t
    t = time.perf_counter()
    _, found = retriever.search(queries, k)
    faiss_seconds = time.perf_counter() - t
    t = time.perf_counter()
    exact = _numpy_search(items, queries, k)
    numpy_seconds = time.perf_counter() - t
    recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, exact, strict=True)]))
    return {
        "items": cfg.faiss_items,
        "dim": d,
        "queries": cfg.faiss_queries,
        "index_type": retriever.index_type,
        "build_seconds": round(build, 1),
        f"recall@{k}": recall,
        "faiss_qps": cfg.faiss_queries / faiss_seconds,
        "numpy_qps": cfg.faiss_queries / numpy_seconds,
        "speedup": numpy_seconds / faiss_seconds,
        "target_recall": TARGET_RECALL,
        "met": recall >= TARGET_RECALL,
    }


def run_embedding_benchmark(cfg: EmbeddingBenchConfig, *, faiss: bool = True) -> dict:
    matrix, described = _matrix(cfg)
    logger.info("benchmark matrix: %s", described)
    report = {
        "matrix": described,
        "shape": list(matrix.shape),
        "nnz": int(matrix.nnz),
        "factors": cfg.factors,
        "iterations": cfg.iterations,
    }
    report["training"] = training_overhead(matrix, cfg)
    report["session"] = session_latency(matrix, cfg)
    if faiss:
        report["retrieval"] = retrieval(cfg)
    return report


def render(report: dict) -> str:
    flag = lambda ok: "PASS" if ok else "MISS"  # noqa: E731
    tr, se = report["training"], report["session"]
    lines = [
        f"matrix: {report['matrix']} ({report['factors']} factors, {report['iterations']} iterations)",
        f"training   raw implicit median {np.median(tr['raw_implicit_seconds']):.2f}s, Vitrine median "
        f"{np.median(tr['vitrine_seconds']):.2f}s: overhead {tr['overhead']:+.1%} (target ≤ {tr['target']:.0%})"
        f"  {flag(tr['met'])}; raw implicit {tr['raw_seconds_per_iteration']:.3f}s per iteration",
        f"session    fold-in of {se['events_per_session']} events + top-k over {se['catalogue_items']:,} items: "
        f"p50 {se['p50_ms']:.2f} ms, p99 {se['p99_ms']:.2f} ms (target ≤ {se['target_p99_ms']:g} ms)"
        f"  {flag(se['met'])}",
    ]
    if "retrieval" in report:
        r = report["retrieval"]
        lines.append(
            f"retrieval  {r['items']:,} × {r['dim']}-d, index {r['index_type']} built in {r['build_seconds']}s: "
            f"recall@10 {r['recall@10']:.3f} (target ≥ {r['target_recall']}) {flag(r['met'])}; "
            f"{r['faiss_qps']:,.0f} q/s vs numpy brute force {r['numpy_qps']:,.0f} q/s ({r['speedup']:.1f}×)"
        )
    return "\n".join(lines)
