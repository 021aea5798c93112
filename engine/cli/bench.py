"""``vitrine bench``: benchmarks, run on demand (HTTP load, personalised-set latency, precomputed sets, embeddings,
index)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from engine.cli.options import add_artifacts, add_json, add_version, from_args, optional_path, write_json


def _cmd_load(args: argparse.Namespace) -> int:
    from engine.benchmarks.load import run_load_benchmark

    options = ("url", "requests", "concurrency", "n", "seed", "overload_factor", "known_pool", "workers")
    report = run_load_benchmark(
        artifacts=optional_path(args.artifacts), **from_args(args, *options, "service_key", "metrics_token")
    )
    print(report.render())
    write_json(args.json, report.to_dict())
    return 0


def _cmd_personalise(args: argparse.Namespace) -> int:
    from engine.benchmarks.personalise import run_personalise_benchmark

    report = run_personalise_benchmark(Path(args.artifacts), **from_args(args, "version", "requests", "n", "threads"))
    print(report.render())
    write_json(args.json, report.to_dict())
    return 0


def _cmd_embeddings(args: argparse.Namespace) -> int:
    from engine.benchmarks.embeddings import EmbeddingBenchConfig, render, run_embedding_benchmark

    names = ("faiss_items", "factors", "iterations", "threads", "repeats", "seed")
    cfg = EmbeddingBenchConfig(data=optional_path(args.data), **from_args(args, *names))
    report = run_embedding_benchmark(cfg, faiss=args.faiss_items > 0)
    print(render(report))
    write_json(args.json, report)
    return 0


def _cmd_index(args: argparse.Namespace) -> int:
    from engine.benchmarks.index import IndexBenchConfig, render, run_index_benchmark

    names = ("items", "dim", "queries", "single_queries", "threads", "clusters", "seed")
    types = tuple(args.types.split(","))
    cfg = IndexBenchConfig(types=types, workdir=optional_path(args.workdir), **from_args(args, *names))
    report = run_index_benchmark(cfg)
    print(render(report))
    write_json(args.json, report)
    return 0


def _cmd_precomputed(args: argparse.Namespace) -> int:
    from engine.benchmarks.precomputed import run_precomputed_benchmark
    from engine.cli.batch import image_key
    from engine.serving.precomputed_store import open_precomputed_store

    artifacts = Path(args.artifacts)
    redis_url = args.redis_url or os.environ.get("VITRINE_REDIS_URL") or None
    report = run_precomputed_benchmark(
        artifacts,
        store=open_precomputed_store(
            artifacts, redis_url, redis_prefix=os.environ.get("VITRINE_REDIS_PREFIX", "vitrine:")
        ),
        key=image_key(artifacts),
        **from_args(args, "requests", "n", "neighbours"),
    )
    print(report.render())
    write_json(args.json, report.to_dict())
    return 0


def register(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Add ``vitrine bench`` and its subcommands; returns the group that ``bench generator`` joins."""
    bench = sub.add_parser("bench", help="benchmarks (run on demand)").add_subparsers(
        dest="bench_command", required=True
    )
    load = bench.add_parser(
        "load",
        help="HTTP load against the API: known (cached), session and new shoppers' sets, then an open-loop overload",
    )
    load.add_argument("--url", help="a running API (default: start one on the serving bundle)")
    load.add_argument(
        "--service-key",
        default=os.environ.get("VITRINE_SERVICE_KEY"),
        help="a service key of the API at --url (default $VITRINE_SERVICE_KEY)",
    )
    load.add_argument(
        "--metrics-token",
        default=os.environ.get("VITRINE_METRICS_TOKEN"),
        help="reads the server's /metrics into the report (default $VITRINE_METRICS_TOKEN, else the service key)",
    )
    add_artifacts(load)
    load.add_argument("--requests", type=int, default=400, help="requests per scenario")
    load.add_argument("--concurrency", type=int, default=8, help="clients (the second known scenario: twice this)")
    load.add_argument("--n", type=int, default=8, help="images per set")
    load.add_argument(
        "--overload-factor",
        type=float,
        default=4.0,
        help="the overload scenario's arrival rate, in multiples of the fresh-set throughput measured (0: skip it)",
    )
    load.add_argument("--known-pool", type=int, default=100, help="distinct known shoppers, warmed up once")
    load.add_argument(
        "--workers", type=int, default=1, help="uvicorn workers of the API it starts (without --url); one a core"
    )
    load.add_argument("--seed", type=int, default=0)
    add_json(load)
    load.set_defaults(func=_cmd_load)

    pb = bench.add_parser("personalise", help="in-process latency of preference-maximised image sets (p50/p99)")
    add_artifacts(pb)
    add_version(pb)
    pb.add_argument("--requests", type=int, default=100, help="timed requests, each for a new shopper")
    pb.add_argument("--n", type=int, default=8, help="images per set")
    pb.add_argument("--threads", type=int, default=1, help="torch threads (the API's default is 1)")
    add_json(pb)
    pb.set_defaults(func=_cmd_personalise)

    prb = bench.add_parser(
        "precomputed", help="stored image sets against fresh ones: served, equal, and the latency of each (p50/p99)"
    )
    add_artifacts(prb)
    prb.add_argument("--requests", type=int, default=30, help="the first N shoppers the batch job renders")
    prb.add_argument("--n", type=int, default=8, help="images per set, as the job rendered them")
    prb.add_argument("--neighbours", type=int, default=4, help="items per image, as the job rendered them")
    prb.add_argument("--redis-url", help="read this Redis (default $VITRINE_REDIS_URL; unset: the SQLite file)")
    add_json(prb)
    prb.set_defaults(func=_cmd_precomputed)

    embb = bench.add_parser("embeddings", help="training overhead over implicit, session latency, FAISS vs numpy")
    embb.add_argument("--data", help="use this store's matrix (default: a synthetic 50k × 20k power-law matrix)")
    embb.add_argument("--faiss-items", type=int, default=1_000_000, help="synthetic catalogue size (0: skip)")
    embb.add_argument("--factors", type=int, default=64)
    embb.add_argument("--iterations", type=int, default=15, help="ALS iterations per fit")
    embb.add_argument("--threads", type=int, default=0, help="implicit's threads (0: every core)")
    embb.add_argument("--repeats", type=int, default=3)
    embb.add_argument("--seed", type=int, default=0)
    add_json(embb)
    embb.set_defaults(func=_cmd_embeddings)

    ib = bench.add_parser("index", help="flat, IVF-Flat and IVF-PQ: build time, bytes per item, recall@10, q/s")
    ib.add_argument("--items", type=int, default=1_000_000, help="synthetic catalogue size")
    ib.add_argument("--dim", type=int, default=64)
    ib.add_argument("--queries", type=int, default=1000, help="queries for recall and the batched q/s")
    ib.add_argument("--single-queries", type=int, default=200, help="of those, timed one per call on one thread")
    ib.add_argument("--threads", type=int, default=2, help="threads for the batched search")
    ib.add_argument("--clusters", type=int, default=1000, help="cluster centres the vectors scatter around")
    ib.add_argument("--types", default="flat,ivf,ivfpq", help="comma-separated index types to measure")
    ib.add_argument("--workdir", help="folder for the saved indexes (default: the system's temporary folder)")
    ib.add_argument("--seed", type=int, default=0)
    add_json(ib)
    ib.set_defaults(func=_cmd_index)
    return bench
