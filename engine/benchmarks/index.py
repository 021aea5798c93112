"""``vitrine bench index``: flat, IVF-Flat and IVF-PQ side by side on one synthetic catalogue.

For each index type the retriever builds (``models.retriever``, each with its default settings, nprobe
calibrated as in a bundle), on ``items`` clustered unit vectors of ``dim`` dimensions:

- build seconds (training, adding and the nprobe calibration, as ``FaissRetriever.build`` runs them);
- memory per item: the saved index file's bytes; for IVF-PQ, the bytes of what each query scans (codes,
  ids and cells, without the exact vectors of the re-ranking); and, measured in a fresh process that loads
  the saved index as an API worker does, the private (anonymous) memory that loading adds, and the
  file-backed pages it had mapped after the queries (IVF-PQ's memory-mapped file: shared between
  workers, evictable);
- recall@10 against exact (flat) search on ``queries`` queries drawn from the same clusters;
- queries per second one query per call on one thread (a request's path; also CPU milliseconds per query,
  steadier than wall time on a shared machine), and for the whole batch in one call on ``threads`` threads.

The vectors are generated in float32 chunks, so 10M × 64 needs about 2.6 GB for the vectors, plus the index
being measured (flat: another 2.6 GB, and a third copy while it is built; the loading process holds a fourth).
"""

from __future__ import annotations

import logging
import multiprocessing
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from models.retriever import INDEX_TYPES, FaissRetriever, RetrieverConfig

logger = logging.getLogger(__name__)

BENCH_TYPES = ("flat", "ivf", "ivfpq")
LABELS = {"flat": "flat", "ivf": "IVF-Flat", "ivfpq": "IVF-PQ", "hnsw": "HNSW"}
CHUNK = 1_000_000


@dataclass(frozen=True, kw_only=True)
class IndexBenchConfig:
    items: int = 1_000_000
    dim: int = 64
    queries: int = 1000
    single_queries: int = 200  # of the queries, how many are also timed one per call on one thread
    threads: int = 2  # OpenMP threads for the batched search
    clusters: int = 1000
    types: tuple[str, ...] = BENCH_TYPES
    seed: int = 0
    workdir: Path | None = None  # where the indexes are saved to be measured (default: a temporary folder)

    def __post_init__(self) -> None:
        if self.items < 1 or self.dim < 1 or self.queries < 1 or self.threads < 1 or self.clusters < 1:
            raise ValueError("items, dim, queries, threads and clusters must be >= 1")
        if not 0 <= self.single_queries <= self.queries:
            raise ValueError(f"single_queries must be in 0..queries ({self.queries}); got {self.single_queries}")
        unknown = sorted(set(self.types) - set(INDEX_TYPES[1:]))
        if unknown or not self.types:
            raise ValueError(f"types must be some of {INDEX_TYPES[1:]}; got {self.types}")


def vectors_around(centres: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, d) float32 unit vectors around (C, d) ``centres`` (noise 0.5 per dimension around N(0, 1) centres,
    as ``engine.benchmarks.embeddings.clustered_vectors``), made a million rows at a time: the output is the
    peak."""
    out = np.empty((n, centres.shape[1]), dtype=np.float32)
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        block = centres[rng.integers(0, len(centres), stop - start)]
        block += 0.5 * rng.standard_normal(block.shape, dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:stop] = block
    return out


def _memory() -> dict[str, int]:
    """This process's resident anonymous and file-backed memory in bytes (Linux ``/proc``; empty elsewhere)."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    return {k: int(fields[k].split()[0]) * 1024 for k in ("RssAnon", "RssFile") if k in fields}


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(a[:k].tolist()) & set(b.tolist())) / k for a, b in zip(found, truth, strict=True)]))


def _load_and_search(folder: Path, k: int, single: int, threads: int) -> dict:
    """In a fresh process (so that its memory counts only this index): load the saved retriever, note the
    memory it added, then time ``single`` one-query calls on one thread and the whole batch on ``threads``.
    Returns the figures and the (Q, k) rows found for the batch."""
    queries = np.load(folder / "queries.npy")
    before = _memory()
    retriever = FaissRetriever.load(folder)
    loaded = _memory()
    ids_bytes = retriever.item_ids.nbytes  # loaded beside the index, not part of it: left out below
    faiss.omp_set_num_threads(1)
    t, cpu = time.perf_counter(), time.process_time()
    for q in queries[:single]:
        retriever.search(q[None, :], k)
    single_seconds, single_cpu = time.perf_counter() - t, time.process_time() - cpu
    faiss.omp_set_num_threads(threads)
    t = time.perf_counter()
    _, found = retriever.search(queries, k)
    batch_seconds = time.perf_counter() - t
    searched = _memory()
    out = {
        "qps_single_thread": single / single_seconds if single else None,
        "cpu_ms_per_query_single_thread": 1e3 * single_cpu / single if single else None,
        "qps_batched": len(queries) / batch_seconds,
        "found": found,
    }
    if before:
        n = len(retriever)
        out["private_bytes_per_item"] = (loaded["RssAnon"] - before["RssAnon"] - ids_bytes) / n
        out["mapped_bytes_per_item_after_queries"] = (searched["RssFile"] - before["RssFile"]) / n
    return out


def measure_type(
    kind: str, items: np.ndarray, queries: np.ndarray, truth: np.ndarray, cfg: IndexBenchConfig, folder: Path
) -> dict:
    """One index type's figures. items: (n, d) unit vectors; queries: (Q, d); truth: (Q, 10) exact rows.

    The index is built and saved here, then loaded and searched in a new process, as an API worker would."""
    n, k = len(items), truth.shape[1]
    ids = np.char.mod("%d", np.arange(n))  # the shortest strings, so the ids weigh little beside the index
    t = time.perf_counter()
    built = FaissRetriever.build(items, ids, RetrieverConfig(index_type=kind))
    build_seconds = time.perf_counter() - t
    built.save(folder)
    nprobe, refine_factor = built.nprobe, built.refine_factor
    codes = None
    if isinstance(built.index, faiss.IndexRefine):  # what each query scans, without the re-ranking's vectors
        codes = faiss.serialize_index(faiss.downcast_index(built.index.base_index)).nbytes / n
    del built
    np.save(folder / "queries.npy", queries)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        served = pool.apply(_load_and_search, (folder, k, cfg.single_queries, cfg.threads))
    row = {
        "type": kind,
        "build_seconds": round(build_seconds, 1),
        "nprobe": nprobe,
        "refine_factor": refine_factor,
        "file_bytes_per_item": (folder / "items.faiss").stat().st_size / n,
        "codes_bytes_per_item": codes,
        f"recall@{k}": _recall(served.pop("found"), truth),
        "batched_threads": cfg.threads,
        **served,
    }
    logger.info("%s: %s", LABELS[kind], row)
    return row


def run_index_benchmark(cfg: IndexBenchConfig) -> dict:
    """Every type in ``cfg.types`` on one catalogue; the report's ``rows`` hold one dict per type."""
    t = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    centres = rng.standard_normal((cfg.clusters, cfg.dim), dtype=np.float32)
    items = vectors_around(centres, cfg.items, rng)
    queries = vectors_around(centres, cfg.queries, np.random.default_rng(cfg.seed + 1))
    generate_seconds = time.perf_counter() - t
    t = time.perf_counter()
    _, truth = faiss.knn(queries, items, 10, metric=faiss.METRIC_INNER_PRODUCT)
    exact_seconds = time.perf_counter() - t
    logger.info("%d × %d vectors in %.0fs; exact top 10 in %.0fs", *items.shape, generate_seconds, exact_seconds)
    root = Path(tempfile.mkdtemp(prefix="vitrine-bench-index-", dir=cfg.workdir))
    rows = []
    try:
        for kind in cfg.types:
            rows.append(measure_type(kind, items, queries, truth, cfg, root / kind))
            shutil.rmtree(root / kind)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "items": cfg.items,
        "dim": cfg.dim,
        "clusters": cfg.clusters,
        "queries": cfg.queries,
        "single_queries": cfg.single_queries,
        "seed": cfg.seed,
        "exact_search_seconds": round(exact_seconds, 1),
        "faiss": faiss.__version__,
        "rows": rows,
    }


def _cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render(report: dict) -> str:
    """The report as a table, one line per index type."""
    lines = [
        f"{report['items']:,} items × {report['dim']}-d ({report['clusters']} clusters), {report['queries']} "
        f"queries ({report['single_queries']} one at a time); recall against exact search; faiss {report['faiss']}",
        f"{'index':<9} {'build s':>8} {'nprobe':>6} {'list':>4} {'file B/it':>9} {'codes B/it':>10} "
        f"{'private B/it':>12} {'mapped B/it':>11} {'recall@10':>9} {'q/s 1 thr':>9} {'cpu ms/q':>8} {'q/s batch':>9}",
    ]
    for r in report["rows"]:
        lines.append(
            f"{LABELS[r['type']]:<9} {r['build_seconds']:>8.1f} {r['nprobe'] or '-':>6} "
            f"{_cell(r['refine_factor'], '.0f'):>4} "
            f"{r['file_bytes_per_item']:>9.1f} {_cell(r['codes_bytes_per_item'], '.1f'):>10} "
            f"{_cell(r.get('private_bytes_per_item'), '.1f'):>12} "
            f"{_cell(r.get('mapped_bytes_per_item_after_queries'), '.1f'):>11} {r['recall@10']:>9.4f} "
            f"{_cell(r['qps_single_thread'], ',.0f'):>9} {_cell(r['cpu_ms_per_query_single_thread'], '.3f'):>8} "
            f"{r['qps_batched']:>9,.0f}"
        )
    threads = sorted({r["batched_threads"] for r in report["rows"]})
    lines += [
        f"batched: all queries in one call on {', '.join(map(str, threads))} thread(s). list: IVF-PQ's re-ranked "
        "shortlist, in multiples of k. B/it: bytes per item; "
        "codes: IVF-PQ without its re-ranking vectors; private: anonymous memory a worker adds by loading "
        "the index; mapped: file pages it had mapped after the queries (shared, evictable)",
    ]
    return "\n".join(lines)
