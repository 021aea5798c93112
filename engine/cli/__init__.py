"""``vitrine``: the one command-line entry point. Each subcommand is a thin wrapper over one engine function."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from engine.cli import generator as generator_cli

logger = logging.getLogger("vitrine")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader logs a harmless AVX2 fallback at INFO
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would bury the load benchmark
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def _cmd_data_demo(args: argparse.Namespace) -> int:
    from engine.world import DemoStoreConfig, write_demo_store

    overrides = {k: v for k, v in {"n_items": args.items, "n_users": args.users, "weeks": args.weeks}.items() if v}
    summary = write_demo_store(
        Path(args.out), DemoStoreConfig(seed=args.seed, **overrides), show_progress=not args.no_progress
    )
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from engine.training.config import load_train_config
    from engine.training.pipeline import train_bundle

    if not args.data:
        raise ValueError("vitrine train needs --data (a demo store or an H&M folder)")
    overrides = {"seed": args.seed} if args.seed is not None else {}
    if args.device:
        overrides.update({"gan_training": {"device": args.device}, "classifier_training": {"device": args.device}})
    config = load_train_config(args.preset, Path(args.config) if args.config else None, overrides)
    version = train_bundle(
        Path(args.data),
        Path(args.artifacts),
        config,
        show_progress=not args.no_progress,
        promote=args.promote,
    )
    print(f"bundle {version} written to {Path(args.artifacts) / version}" + (" and promoted" if args.promote else ""))
    return 0


def _cmd_train_embeddings(args: argparse.Namespace) -> int:
    from engine.training.pipeline import retrain_embeddings

    version, comparison = retrain_embeddings(
        Path(args.data),
        Path(args.artifacts),
        since=args.since,
        parent=args.parent,
        show_progress=not args.no_progress,
    )
    k = comparison["new"]["k"]
    print(f"bundle {version} written (embeddings retrained; other components from {comparison['serving']['version']})")
    print(f"validation on the last days, warm users:  {'':<10} {'recall@' + str(k):>10} {'ndcg@' + str(k):>10}")
    for name in ("serving", "new"):
        r = comparison[name]["results"]
        if r:
            warm = r["warm"]
            print(f"  {name:<8} {comparison[name]['version']}  {warm[f'recall@{k}']:>10.4f} {warm[f'ndcg@{k}']:>10.4f}")
    print(f"promote it with: vitrine promote {version} --artifacts {args.artifacts}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from engine.evaluation.bundle import evaluate_bundle

    if not args.data:
        raise ValueError("vitrine evaluate needs --data (the data the bundle was trained on)")
    report = evaluate_bundle(
        Path(args.data),
        Path(args.artifacts),
        version=args.version,
        out_dir=Path(args.out) if args.out else None,
        users=args.users,
        show_progress=not args.no_progress,
    )
    print(report.render())
    print(f"\nreport: {report.json_path}\ncontact sheet: {report.contact_sheet_path}")
    return 0


def _cmd_evaluate_recommenders(args: argparse.Namespace) -> int:
    from engine.evaluation.recommenders import evaluate_recommenders, render

    out = Path(args.out) if args.out else None
    report = evaluate_recommenders(
        Path(args.data),
        test_days=args.test_days,
        k=args.k,
        out=out,
        seed=args.seed,
        validation_periods=args.validation_periods,
        show_progress=not args.no_progress,
    )
    print(render(report))
    if out:
        print(f"\nreport: {out}")
    return 0


def _cmd_evaluate_sessions(args: argparse.Namespace) -> int:
    from engine.evaluation.sessions import evaluate_sessions, render

    out = Path(args.out) if args.out else None
    report = evaluate_sessions(
        artifacts=Path(args.artifacts) if args.artifacts else None,
        data_path=Path(args.data) if args.data else None,
        out=out,
        users=args.users,
        test_days=args.test_days,
        k=args.k,
        seed=args.seed,
        session_weights=tuple(args.session_weights),
        session_periods=args.session_periods,
        show_progress=not args.no_progress,
    )
    print(render(report))
    if out:
        print(f"\nreport: {out}")
    return 0


def _cmd_train_visual(args: argparse.Namespace) -> int:
    from engine.training.pipeline import retrain_visual

    version, m = retrain_visual(Path(args.artifacts), parent=args.parent, show_progress=not args.no_progress)
    print(f"bundle {version} written (visual encoder added; other components from its parent)")
    print(f"  AUC {m['auc']['visual_encoder']:.4f}; cold-item recall@{m['k']} {m['cold_recall']['visual_encoder']:.4f}")
    print(f"promote it with: vitrine promote {version} --artifacts {args.artifacts}")
    return 0


def _cmd_evaluate_personalisation(args: argparse.Namespace) -> int:
    import torch

    from engine.evaluation.personalisation import evaluate_personalisation, render

    torch.set_num_threads(args.threads)
    report = evaluate_personalisation(
        Path(args.data),
        Path(args.artifacts),
        version=args.version,
        users=args.users,
        n=args.n,
        test_days=args.test_days,
        out=Path(args.out) if args.out else None,
        show_progress=not args.no_progress,
    )
    print(render(report))
    print(f"\nreport: {report['json_path']}")
    return 0


def _cmd_bench_personalise(args: argparse.Namespace) -> int:
    from engine.benchmarks.personalise import run_personalise_benchmark

    report = run_personalise_benchmark(
        Path(args.artifacts), version=args.version, requests=args.requests, n=args.n, threads=args.threads
    )
    print(report.render())
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    os.environ["VITRINE_ARTIFACTS"] = str(Path(args.artifacts).resolve())
    url = f"http://{args.host}:{args.port}"
    print(
        f"Vitrine serving on {url}\n  try: {url}/v1/users/U00001/image-set?n=8\n"
        f"  docs: {url}/docs\n  health: {url}/healthz",
        flush=True,
    )
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
    )
    return 0


def _cmd_bundles(args: argparse.Namespace) -> int:
    from engine.artifacts.promotion import key_metric
    from engine.artifacts.registry import ArtifactRegistry

    infos = ArtifactRegistry(Path(args.artifacts)).versions()
    if not infos:
        print(f"no bundles under {args.artifacts}; train one with `vitrine train`")
        return 0
    for info in infos:
        metric = key_metric(info.manifest)
        shown = f"{metric[0]} = {metric[1]:.4f}" if metric else "no validation metric"
        parents = info.manifest.get("parents") or []
        lineage = f"  retrained {'+'.join(info.manifest.get('retrained', []))} from {parents[0]}" if parents else ""
        created = info.manifest.get("created_at", "?")
        print(f"{'*' if info.serving else ' '} {info.version}  {created}  {shown}{lineage}")
    return 0


def _cmd_promote(args: argparse.Namespace) -> int:
    from engine.artifacts.promotion import promote_bundle
    from engine.artifacts.registry import ArtifactRegistry, BundleRefused

    try:
        promote_bundle(ArtifactRegistry(Path(args.artifacts)), args.version, force=args.force, tolerance=args.tolerance)
    except BundleRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    print(f"{args.version} now serves")
    return 0


def _cmd_bench_load(args: argparse.Namespace) -> int:
    from engine.benchmarks.load import run_load_benchmark

    report = run_load_benchmark(
        url=args.url,
        artifacts=Path(args.artifacts) if args.artifacts else None,
        requests=args.requests,
        concurrency=args.concurrency,
        n=args.n,
    )
    print(report.render())
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2))
    return 0


def _cmd_bench_embeddings(args: argparse.Namespace) -> int:
    from engine.benchmarks.embeddings import EmbeddingBenchConfig, render, run_embedding_benchmark

    cfg = EmbeddingBenchConfig(
        data=Path(args.data) if args.data else None,
        faiss_items=args.faiss_items,
        repeats=args.repeats,
        seed=args.seed,
    )
    report = run_embedding_benchmark(cfg, faiss=args.faiss_items > 0)
    print(render(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def _store(args: argparse.Namespace):
    from engine.experiments.eventstore import EventStore, StoreError

    try:
        return EventStore(args.database_url)
    except StoreError as exc:
        raise ValueError(f"{exc} (set --database-url or VITRINE_DATABASE_URL)") from None


def _cmd_experiments_create(args: argparse.Namespace) -> int:
    from engine.experiments import ExperimentRegistry, load_experiment_file

    with _store(args) as store:
        experiment = ExperimentRegistry(store).create(load_experiment_file(Path(args.config)))
    print(json.dumps(experiment.to_dict(), indent=2))
    return 0


def _cmd_experiments_list(args: argparse.Namespace) -> int:
    from engine.experiments import list_experiments

    with _store(args) as store:
        experiments = list_experiments(store)
    if not experiments:
        print(f"no experiments in {args.database_url}; create one with `vitrine experiments create --config F.json`")
    for e in experiments:
        arms = ", ".join(f"{v['name']}={v['weight']:g} ({v['strategy']})" for v in e["variants"])
        print(f"{e['name']}  {e['unit']}  {e['start']} → {e['stop']}  traffic {e['traffic']:.0%}  [{arms}]")
    return 0


def _cmd_experiments_report(args: argparse.Namespace) -> int:
    from datetime import datetime

    from engine.experiments import UnknownExperiment, experiment_report, render_report, write_chart

    as_of = datetime.fromisoformat(args.as_of) if args.as_of else None
    with _store(args) as store:
        try:
            report = experiment_report(store, args.name, as_of=as_of)
        except UnknownExperiment as exc:
            raise ValueError(str(exc)) from None
    print(json.dumps(report, indent=2) if args.json else render_report(report))
    if args.chart:
        print(f"chart: {write_chart(report, Path(args.chart))}")
    return 0


def _cmd_experiments_simulate(args: argparse.Namespace) -> int:
    from engine.experiments.simulation import SimulationSettings, simulate_aa, simulate_ab

    if args.kind == "http":
        return _simulate_http(args)
    args.shoppers = args.shoppers or 2000
    tastes = None
    if args.store:
        from engine.world import load_tastes

        tastes = list(load_tastes(Path(args.store)).values())
    runs = args.runs or (200 if args.kind == "aa" else 40)
    settings = SimulationSettings(runs=runs, shoppers=args.shoppers, days=args.days, alpha=args.alpha, seed=args.seed)
    simulate = simulate_aa if args.kind == "aa" else simulate_ab
    summary = simulate(settings, tastes=tastes, show_progress=not args.no_progress)
    print(summary.render())
    return 0 if summary.passed else 1


def _simulate_http(args: argparse.Namespace) -> int:
    from engine.experiments.http_simulation import HttpSimulationSettings, run_simulation

    settings = HttpSimulationSettings(
        shoppers=args.shoppers,
        days=args.days,
        alpha=args.alpha,
        seed=args.seed,
        aa_runs=200 if args.runs is None else args.runs,
        aa_http_runs=args.aa_http_runs,
        conversion=args.conversion,
    )
    summary = run_simulation(
        Path(args.store or "data/demo"),
        settings,
        artifacts=Path(args.artifacts),
        url=args.url,
        admin_token=args.admin_token,
        show_progress=not args.no_progress,
    )
    print(summary.render())
    return 0 if summary.passed else 1


def _float_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas, such as 0,1,2,5; got {text!r}"
        ) from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative numbers separated by commas; got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vitrine", description="Personalised product imagery.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="data sets").add_subparsers(dest="data_command", required=True)
    demo = data.add_parser("demo", help="generate the embedded demo store (no network)")
    demo.add_argument("--out", required=True, help="folder to write the store into")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--items", type=int, help="catalogue size (default 2000)")
    demo.add_argument("--users", type=int, help="shoppers (default 3000)")
    demo.add_argument("--weeks", type=int, help="weeks of logs (default 8)")
    demo.add_argument("--no-progress", action="store_true")
    demo.set_defaults(func=_cmd_data_demo)

    train = sub.add_parser("train", help="train every model and write a bundle")
    train_sub = train.add_subparsers(dest="train_command")
    emb = train_sub.add_parser("embeddings", help="retrain only the embeddings; other components from the parent")
    emb.add_argument("--data", required=True)
    emb.add_argument("--artifacts", default="data/artifacts")
    emb.add_argument("--since", help="use only events from this date/time on (ISO 8601)")
    emb.add_argument("--parent", help="bundle to start from (default: the serving one)")
    emb.add_argument("--no-progress", action="store_true")
    emb.set_defaults(func=_cmd_train_embeddings)
    vis = train_sub.add_parser("visual", help="add a visual encoder to a bundle; other components from the parent")
    vis.add_argument("--artifacts", default="data/artifacts")
    vis.add_argument("--parent", help="bundle to start from (default: the serving one)")
    vis.add_argument("--no-progress", action="store_true")
    vis.set_defaults(func=_cmd_train_visual)
    train.add_argument("--data", help="a data folder (demo store or H&M layout)")
    train.add_argument("--artifacts", default="data/artifacts", help="bundle root (default data/artifacts)")
    train.add_argument("--preset", default="demo", help="demo | hm | full | tiny (default demo)")
    train.add_argument("--config", help="JSON file overriding the preset (unknown keys are errors)")
    train.add_argument("--seed", type=int)
    train.add_argument("--device", help="cpu or cuda for the GAN and classifier (default cpu)")
    train.add_argument("--promote", action="store_true", help="make the new bundle the serving one if it passes")
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(func=_cmd_train)

    ev = sub.add_parser("evaluate", help="evaluate a bundle; print metrics and write a JSON report")
    ev_sub = ev.add_subparsers(dest="evaluate_command")
    rec = ev_sub.add_parser("recommenders", help="Vitrine's recommender against baselines on a time split")
    rec.add_argument("--data", required=True, help="demo store or H&M folder")
    rec.add_argument("--test-days", type=int, default=1, help="held-out last days (default 1)")
    rec.add_argument("--k", type=int, default=12)
    rec.add_argument("--seed", type=int, default=0)
    rec.add_argument(
        "--validation-periods",
        type=int,
        default=0,
        metavar="N",
        help="score N periods of --test-days days cut from before the test period instead of the test period "
        "itself: judge model changes there, so the test period stays unseen",
    )
    rec.add_argument("--out", help="JSON report path")
    rec.add_argument("--no-progress", action="store_true")
    rec.set_defaults(func=_cmd_evaluate_recommenders)
    ses = ev_sub.add_parser("sessions", help="next-set response to a session; fold-in against training")
    ses.add_argument("--artifacts", help="bundle registry: measure the next set after session views")
    ses.add_argument("--data", help="a log with a time split: fold-in vs trained-in MAP@K")
    ses.add_argument("--users", type=int, default=200, help="shoppers per group for the session response")
    ses.add_argument("--test-days", type=int, default=1)
    ses.add_argument("--k", type=int, default=12)
    ses.add_argument("--seed", type=int, default=0)
    ses.add_argument(
        "--session-weights",
        type=_float_list,
        default=(),
        metavar="W,W,...",
        help="with --data: MAP@K of known shoppers when their last session counts W× against their history",
    )
    ses.add_argument(
        "--session-periods",
        type=int,
        default=1,
        help="with --session-weights: pool the shoppers of N target periods before the test period (default 1)",
    )
    ses.add_argument("--out", help="JSON report path")
    ses.add_argument("--no-progress", action="store_true")
    ses.set_defaults(func=_cmd_evaluate_sessions)
    per = ev_sub.add_parser("personalisation", help="preference-guided sets: lift, realism cost, tastes, purchases")
    per.add_argument("--data", required=True, help="the data the bundle was trained on (demo store or H&M)")
    per.add_argument("--artifacts", default="data/artifacts")
    per.add_argument("--version", help="bundle version (default: the serving one)")
    per.add_argument("--users", type=int, default=200, help="shoppers sampled per measurement")
    per.add_argument("--n", type=int, default=8, help="images per set")
    per.add_argument(
        "--test-days",
        type=int,
        default=None,
        help="held-out last days for the purchase recall (default: the fewest that hold --users known buyers)",
    )
    per.add_argument("--out", help="JSON report path (default <artifacts>/reports/<version>/personalisation.json)")
    per.add_argument("--threads", type=int, default=1, help="torch threads (small batches: 1 is fastest)")
    per.add_argument("--no-progress", action="store_true")
    per.set_defaults(func=_cmd_evaluate_personalisation)
    ev.add_argument("--data")
    ev.add_argument("--artifacts", default="data/artifacts")
    ev.add_argument("--version", help="bundle version (default: the serving one)")
    ev.add_argument("--out", help="report folder (default <artifacts>/reports/<version>)")
    ev.add_argument("--users", type=int, default=300, help="shoppers sampled for the image evaluation")
    ev.add_argument("--no-progress", action="store_true")
    ev.set_defaults(func=_cmd_evaluate)

    serve = sub.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--artifacts", default="data/artifacts")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=_cmd_serve)

    bundles = sub.add_parser("bundles", help="list bundles and their key metric (* = serving)")
    bundles.add_argument("--artifacts", default="data/artifacts")
    bundles.set_defaults(func=_cmd_bundles)

    promote = sub.add_parser("promote", help="make a bundle the serving one, after its checks")
    promote.add_argument("version")
    promote.add_argument("--artifacts", default="data/artifacts")
    promote.add_argument("--force", action="store_true", help="promote even if the key metric drops")
    promote.add_argument("--tolerance", type=float, default=0.05)
    promote.set_defaults(func=_cmd_promote)

    bench = sub.add_parser("bench", help="benchmarks (run on demand)").add_subparsers(
        dest="bench_command", required=True
    )
    load = bench.add_parser("load", help="concurrent HTTP load against the API")
    load.add_argument("--url", help="a running API (default: start one on the serving bundle)")
    load.add_argument("--artifacts", default="data/artifacts")
    load.add_argument("--requests", type=int, default=400, help="requests per scenario")
    load.add_argument("--concurrency", type=int, default=8)
    load.add_argument("--n", type=int, default=8, help="images per set")
    load.add_argument("--json", help="also write the figures to this JSON file")
    load.set_defaults(func=_cmd_bench_load)
    pb = bench.add_parser("personalise", help="in-process latency of preference-maximised image sets (p50/p99)")
    pb.add_argument("--artifacts", default="data/artifacts")
    pb.add_argument("--version", help="bundle version (default: the serving one)")
    pb.add_argument("--requests", type=int, default=100, help="timed requests, each for a new shopper")
    pb.add_argument("--n", type=int, default=8, help="images per set")
    pb.add_argument("--threads", type=int, default=1, help="torch threads (the API's default is 1)")
    pb.add_argument("--json", help="also write the figures to this JSON file")
    pb.set_defaults(func=_cmd_bench_personalise)
    embb = bench.add_parser("embeddings", help="training overhead over implicit, session latency, FAISS vs numpy")
    embb.add_argument("--data", help="use this store's matrix (default: a synthetic 50k × 20k power-law matrix)")
    embb.add_argument("--faiss-items", type=int, default=1_000_000, help="synthetic catalogue size (0: skip)")
    embb.add_argument("--repeats", type=int, default=3)
    embb.add_argument("--seed", type=int, default=0)
    embb.add_argument("--json", help="also write the figures to this JSON file")
    embb.set_defaults(func=_cmd_bench_embeddings)
    generator_cli.register(train_sub, ev_sub, bench)

    exps = sub.add_parser("experiments", help="A/B tests: define, report, simulate").add_subparsers(
        dest="experiments_command", required=True
    )
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument(
        "--database-url",
        default=os.environ.get("VITRINE_DATABASE_URL", "sqlite:///data/events.db"),
        help="event store (default $VITRINE_DATABASE_URL or sqlite:///data/events.db)",
    )
    create = exps.add_parser("create", parents=[db], help="create an experiment from a JSON file")
    create.add_argument("--config", required=True, help="experiment JSON (see docs/EXPERIMENTS.md)")
    create.set_defaults(func=_cmd_experiments_create)
    exps.add_parser("list", parents=[db], help="list experiments").set_defaults(func=_cmd_experiments_list)
    rep = exps.add_parser("report", parents=[db], help="per-variant results, lifts, SRM, sequential test, CUPED")
    rep.add_argument("name")
    rep.add_argument("--as-of", help="ISO 8601 time to report as of (default: now, or the stop if earlier)")
    rep.add_argument("--chart", help="also write the cumulative conversion chart to this PNG")
    rep.add_argument("--json", action="store_true", help="print the report as JSON")
    rep.set_defaults(func=_cmd_experiments_report)
    sim = exps.add_parser("simulate", help="check the statistics on simulated shoppers")
    sim.add_argument(
        "kind",
        choices=["aa", "ab", "http"],
        help="aa: false positives; ab: personalised vs popular (both in process); "
        "http: A/A calibration, then A/A and A/B through the real HTTP API",
    )
    sim.add_argument("--runs", type=int, help="simulated experiments (default 200 for aa and http's A/A, 40 for ab)")
    sim.add_argument("--shoppers", type=int, help="shoppers per experiment (default 2000; http: every store user)")
    sim.add_argument("--artifacts", default="data/artifacts", help="http: the bundle to serve (trained on --store)")
    sim.add_argument("--url", help="http: a running API (with VITRINE_CLIENT_CLOCK=1) instead of starting one")
    sim.add_argument("--admin-token", default=os.environ.get("VITRINE_ADMIN_TOKEN"), help="http: with --url")
    sim.add_argument("--aa-http-runs", type=int, default=1, help="http: A/A experiments over HTTP (default 1)")
    sim.add_argument("--conversion", default="purchase", help="http: click | add_to_cart | purchase")
    sim.add_argument("--days", type=int, default=14, help="experiment length = number of daily looks")
    sim.add_argument("--alpha", type=float, default=0.05)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--store", help="draw tastes from this demo store's hidden tastes (default: fresh draws)")
    sim.add_argument("--no-progress", action="store_true")
    sim.set_defaults(func=_cmd_experiments_simulate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as exc:
        logger.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
