"""``vitrine experiments``: A/B tests: define, list, report, and check the statistics on simulated shoppers."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from engine.cli.options import add_artifacts, add_no_progress, from_args, optional_path, progress


def _store(args: argparse.Namespace):
    from engine.experiments.eventstore import EventStore, StoreError

    try:
        return EventStore(args.database_url)
    except StoreError as exc:
        raise ValueError(f"{exc} (set --database-url or VITRINE_DATABASE_URL)") from None


def _cmd_create(args: argparse.Namespace) -> int:
    from engine.experiments import ExperimentRegistry, load_experiment_file

    with _store(args) as store:
        experiment = ExperimentRegistry(store).create(load_experiment_file(Path(args.config)))
    print(json.dumps(experiment.to_dict(), indent=2))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from engine.experiments import list_experiments

    with _store(args) as store:
        experiments = list_experiments(store)
    if not experiments:
        print(f"no experiments in {args.database_url}; create one with `vitrine experiments create --config F.json`")
    for e in experiments:
        arms = ", ".join(f"{v['name']}={v['weight']:g} ({v['strategy']})" for v in e["variants"])
        print(f"{e['name']}  {e['unit']}  {e['start']} → {e['stop']}  traffic {e['traffic']:.0%}  [{arms}]")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
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


def _cmd_simulate(args: argparse.Namespace) -> int:
    from engine.experiments.simulation import SimulationSettings, simulate_aa, simulate_ab

    if args.kind == "http":
        return _simulate_http(args)
    if args.kind == "loop":
        return _simulate_loop(args)
    tastes = None
    if args.store:
        from engine.world import load_tastes

        tastes = list(load_tastes(Path(args.store)).values())
    runs = args.runs or (200 if args.kind == "aa" else 40)
    settings = SimulationSettings(runs=runs, shoppers=args.shoppers or 2000, **from_args(args, "days", "alpha", "seed"))
    simulate = simulate_aa if args.kind == "aa" else simulate_ab
    summary = simulate(settings, tastes=tastes, show_progress=progress(args))
    print(summary.render())
    return 0 if summary.passed else 1


def _simulate_http(args: argparse.Namespace) -> int:
    from engine.experiments.http_simulation import HttpSimulationSettings, run_simulation

    settings = HttpSimulationSettings(
        aa_runs=200 if args.runs is None else args.runs,
        **from_args(args, "shoppers", "days", "alpha", "seed", "aa_http_runs", "conversion"),
    )
    summary = run_simulation(
        Path(args.store or "data/demo"),
        settings,
        artifacts=Path(args.artifacts),
        show_progress=progress(args),
        **from_args(args, "url", "admin_token"),
    )
    print(summary.render())
    return 0 if summary.passed else 1


def _simulate_loop(args: argparse.Namespace) -> int:
    from engine.evaluation.closed_loop import run_closed_loop
    from engine.experiments.loop import LoopSettings
    from engine.experiments.loop_report import render_loop_report

    settings = LoopSettings(
        shoppers=args.shoppers or LoopSettings.shoppers,
        compare_from=args.compare_from or args.days // 2 + 1,
        **from_args(args, "days", "new_share", "visit_rate"),
    )
    loop = run_closed_loop(
        Path(args.store or "data/demo"),
        Path(args.artifacts),
        settings,
        seeds=range(args.seed, args.seed + args.seeds),
        workdir=optional_path(args.workdir),
        nightly_ranker_bag=args.nightly_ranker_bag or None,
        show_progress=progress(args),
    )
    report = loop.report
    print(render_loop_report(report))
    print(f"total time: {report['seconds']:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"report: {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``vitrine experiments`` and its subcommands."""
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
    create.set_defaults(func=_cmd_create)
    exps.add_parser("list", parents=[db], help="list experiments").set_defaults(func=_cmd_list)
    rep = exps.add_parser("report", parents=[db], help="per-variant results, lifts, SRM, sequential test, CUPED")
    rep.add_argument("name")
    rep.add_argument("--as-of", help="ISO 8601 time to report as of (default: now, or the stop if earlier)")
    rep.add_argument("--chart", help="also write the cumulative conversion chart to this PNG")
    rep.add_argument("--json", action="store_true", help="print the report as JSON")
    rep.set_defaults(func=_cmd_report)

    sim = exps.add_parser("simulate", help="check the statistics on simulated shoppers")
    sim.add_argument(
        "kind",
        choices=["aa", "ab", "http", "loop"],
        help="aa: false positives; ab: personalised vs popular (both in process); "
        "http: A/A calibration, then A/A and A/B through the real HTTP API; "
        "loop: days of shoppers through the HTTP API, a nightly-retrained arm against a frozen one",
    )
    sim.add_argument("--runs", type=int, help="simulated experiments (default 200 for aa and http's A/A, 40 for ab)")
    sim.add_argument(
        "--shoppers", type=int, help="shoppers per experiment (default 2000; http: every store user; loop: 200)"
    )
    add_artifacts(sim, help="http, loop: the bundle to serve (trained on --store)")
    sim.add_argument("--url", help="http: a running API (with VITRINE_CLIENT_CLOCK=1) instead of starting one")
    sim.add_argument("--admin-token", default=os.environ.get("VITRINE_ADMIN_TOKEN"), help="http: with --url")
    sim.add_argument("--aa-http-runs", type=int, default=1, help="http: A/A experiments over HTTP (default 1)")
    sim.add_argument("--conversion", default="purchase", help="http: click | add_to_cart | purchase")
    sim.add_argument("--days", type=int, default=14, help="experiment length = number of daily looks (loop: days)")
    sim.add_argument("--seeds", type=int, default=1, help="loop: runs, with seeds --seed, --seed + 1, … (default 1)")
    sim.add_argument("--new-share", type=float, default=0.5, help="loop: share of shoppers new at day 0 (0.5)")
    sim.add_argument("--visit-rate", type=float, default=0.3, help="loop: chance a shopper visits on a day (0.3)")
    sim.add_argument(
        "--compare-from", type=int, help="loop: compare the arms over this day to the last (default: the second half)"
    )
    sim.add_argument(
        "--nightly-ranker-bag",
        type=int,
        default=1,
        help="loop: LightGBM models in each nightly ranker (default 1, so a night takes seconds; 0: the bundle's own)",
    )
    sim.add_argument("--out", help="loop: also write the report as JSON to this file")
    sim.add_argument("--workdir", help="loop: keep each arm's registry and event store here (default: temporary)")
    sim.add_argument("--alpha", type=float, default=0.05)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--store", help="draw tastes from this demo store's hidden tastes (default: fresh draws)")
    add_no_progress(sim)
    sim.set_defaults(func=_cmd_simulate)
