"""``vitrine evaluate``: a bundle's figures, recommenders against baselines, sessions and personalisation."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli.options import add_artifacts, add_no_progress, add_version, from_args, optional_path, progress


def _cmd_bundle(args: argparse.Namespace) -> int:
    from engine.evaluation.bundle import evaluate_bundle

    if not args.data:
        raise ValueError("vitrine evaluate needs --data (the data the bundle was trained on)")
    report = evaluate_bundle(
        Path(args.data),
        Path(args.artifacts),
        out_dir=optional_path(args.out),
        show_progress=progress(args),
        **from_args(args, "version", "users"),
    )
    print(report.render())
    print(f"\nreport: {report.json_path}\ncontact sheet: {report.contact_sheet_path}")
    return 0


def _cmd_generation(args: argparse.Namespace) -> int:
    from engine.evaluation.generation import evaluate_generation

    _, lines, json_path = evaluate_generation(
        Path(args.data),
        Path(args.artifacts),
        out_dir=optional_path(args.out),
        show_progress=progress(args),
        **from_args(args, "version"),
    )
    print("\n".join(lines))
    print(f"\nreport: {json_path}")
    return 0


def _cmd_recommenders(args: argparse.Namespace) -> int:
    from engine.evaluation.recommenders import evaluate_recommenders, render

    out = optional_path(args.out)
    report = evaluate_recommenders(
        Path(args.data),
        out=out,
        show_progress=progress(args),
        **from_args(args, "test_days", "k", "seed", "validation_periods"),
    )
    _print_report(render(report), out)
    return 0


def _cmd_sessions(args: argparse.Namespace) -> int:
    from engine.evaluation.sessions import evaluate_sessions, render

    out = optional_path(args.out)
    report = evaluate_sessions(
        artifacts=optional_path(args.artifacts),
        data_path=optional_path(args.data),
        out=out,
        session_weights=tuple(args.session_weights),
        show_progress=progress(args),
        **from_args(args, "users", "test_days", "k", "seed", "session_periods"),
    )
    _print_report(render(report), out)
    return 0


def _cmd_personalisation(args: argparse.Namespace) -> int:
    import torch

    from engine.evaluation.personalisation import evaluate_personalisation, render

    torch.set_num_threads(args.threads)
    report = evaluate_personalisation(
        Path(args.data),
        Path(args.artifacts),
        out=optional_path(args.out),
        show_progress=progress(args),
        **from_args(args, "version", "users", "n", "test_days"),
    )
    print(render(report))
    print(f"\nreport: {report['json_path']}")
    return 0


def _cmd_privacy(args: argparse.Namespace) -> int:
    import torch

    from engine.evaluation.privacy import evaluate_privacy, render

    torch.set_num_threads(args.threads)
    out = optional_path(args.out)
    report = evaluate_privacy(
        args.dataset,
        Path(args.data),
        epsilons=args.epsilons,
        judges_dir=optional_path(args.judges),
        out=out,
        show_progress=progress(args),
        **from_args(
            args,
            "steps",
            "seconds",
            "batch_size",
            "width",
            "max_grad_norm",
            "d_steps",
            "samples",
            "max_images",
            "judge_epochs",
            "visual_steps",
            "visual_batch_size",
            "visual_max_grad_norm",
            "seed",
        ),
        parts=tuple(args.parts.split(",")),
    )
    _print_report(render(report), out)
    return 0


def _cmd_private_als(args: argparse.Namespace) -> int:
    from engine.evaluation.private_als import evaluate_private_als, render

    out = optional_path(args.out)
    report = evaluate_private_als(
        Path(args.data),
        epsilons=args.epsilons,
        out=out,
        show_progress=progress(args),
        **from_args(args, "test_days", "k", "seed", "factors", "iterations", "max_items_per_user", "top_items"),
    )
    _print_report(render(report), out)
    return 0


def _epsilons(text: str) -> tuple[float, ...]:
    """``1,4,8,inf``: privacy budgets, inf for the non-private baseline."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected budgets separated by commas, such as 1,4,8,inf; got {text!r}"
        ) from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive budgets (inf: not private), such as 1,8,inf; got {text!r}")
    return values


def _print_report(text: str, out: Path | None) -> None:
    print(text)
    if out:
        print(f"\nreport: {out}")


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


def _split_options(p: argparse.ArgumentParser, test_days_help: str | None = None) -> None:
    """``--test-days``, ``--k`` and ``--seed``: the time split, cut-off and seed of a MAP@K measurement."""
    p.add_argument("--test-days", type=int, default=1, help=test_days_help)
    p.add_argument("--k", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)


def register(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Add ``vitrine evaluate`` and its subcommands; returns the group that ``evaluate generator`` joins."""
    ev = sub.add_parser("evaluate", help="evaluate a bundle; print metrics and write a JSON report")
    ev_sub = ev.add_subparsers(dest="evaluate_command")
    rec = ev_sub.add_parser("recommenders", help="Vitrine's recommender against baselines on a time split")
    rec.add_argument("--data", required=True, help="demo store or H&M folder")
    _split_options(rec, test_days_help="held-out last days (default 1)")
    rec.add_argument(
        "--validation-periods",
        type=int,
        default=0,
        metavar="N",
        help="score N periods of --test-days days cut from before the test period instead of the test period "
        "itself: judge model changes there, so the test period stays unseen",
    )
    rec.add_argument("--out", help="JSON report path")
    add_no_progress(rec)
    rec.set_defaults(func=_cmd_recommenders)

    ses = ev_sub.add_parser("sessions", help="next-set response to a session; fold-in against training")
    ses.add_argument("--artifacts", help="bundle registry: measure the next set after session views")
    ses.add_argument("--data", help="a log with a time split: fold-in vs trained-in MAP@K")
    ses.add_argument("--users", type=int, default=200, help="shoppers per group for the session response")
    _split_options(ses)
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
    add_no_progress(ses)
    ses.set_defaults(func=_cmd_sessions)

    per = ev_sub.add_parser("personalisation", help="preference-guided sets: lift, realism cost, tastes, purchases")
    per.add_argument("--data", required=True, help="the data the bundle was trained on (demo store or H&M)")
    add_artifacts(per)
    add_version(per)
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
    add_no_progress(per)
    per.set_defaults(func=_cmd_personalisation)

    _register_privacy(ev_sub)

    gen = ev_sub.add_parser(
        "generation", help="the served generator alone: judged accuracy, Fréchet distance, checkerboard, targets"
    )
    gen.add_argument("--data", required=True, help="the data the bundle was trained on")
    add_artifacts(gen)
    add_version(gen)
    gen.add_argument("--out", help="report folder (default <artifacts>/reports/<version>)")
    add_no_progress(gen)
    gen.set_defaults(func=_cmd_generation)

    ev.add_argument("--data")
    add_artifacts(ev)
    add_version(ev)
    ev.add_argument("--out", help="report folder (default <artifacts>/reports/<version>)")
    ev.add_argument("--users", type=int, default=300, help="shoppers sampled for the image evaluation")
    add_no_progress(ev)
    ev.set_defaults(func=_cmd_bundle)
    return ev_sub


def _register_privacy(ev_sub: argparse._SubParsersAction) -> None:
    """``vitrine evaluate privacy`` (DP GAN and preference model) and ``vitrine evaluate private-als``."""
    from engine.evaluation.generator_choices import DATASETS

    dp = ev_sub.add_parser("privacy", help="utility against ε: DP GAN (class accuracy, Fréchet) and preference AUC")
    dp.add_argument("--dataset", required=True, choices=DATASETS)
    dp.add_argument("--data", required=True, help="the dataset's folder")
    dp.add_argument("--epsilons", type=_epsilons, default=(1.0, 4.0, 8.0, float("inf")), metavar="E,E,...")
    dp.add_argument("--steps", type=int, default=600, help="GAN steps planned per ε (the noise is set for them)")
    dp.add_argument("--seconds", type=float, help="stop each GAN earlier after this much training time")
    dp.add_argument("--batch-size", type=int, default=64, help="expected images per GAN step")
    dp.add_argument("--width", type=int, default=32, help="generator and discriminator base width")
    dp.add_argument("--max-grad-norm", type=float, default=1.0, help="clipping bound of one image's gradient")
    dp.add_argument("--d-steps", type=int, default=1, help="discriminator steps per generator step")
    dp.add_argument("--samples", type=int, default=2000, help="generated and real images per evaluation")
    dp.add_argument("--max-images", type=int, help="subsample the dataset (it keeps its own train/test split)")
    dp.add_argument("--judges", help="judges folder (default: judges-<dataset> beside --out)")
    dp.add_argument("--judge-epochs", type=int, default=2)
    dp.add_argument("--visual-steps", type=int, default=800, help="preference model steps (stores with logs)")
    dp.add_argument("--visual-batch-size", type=int, default=512, help="expected shoppers per step")
    dp.add_argument("--visual-max-grad-norm", type=float, default=1.0, help="clipping bound of one shopper's gradient")
    dp.add_argument("--parts", default="gan,visual", help="gan, visual (stores with logs) or gan,visual")
    dp.add_argument("--seed", type=int, default=0)
    dp.add_argument("--threads", type=int, default=2, help="torch threads")
    dp.add_argument("--out", help="JSON report path")
    add_no_progress(dp)
    dp.set_defaults(func=_cmd_privacy)

    als = ev_sub.add_parser("private-als", help="MAP@K of user-level private ALS against ALS and popularity")
    als.add_argument("--data", required=True, help="demo store or H&M folder")
    als.add_argument("--epsilons", type=_epsilons, default=(1.0, 8.0), metavar="E,E,...")
    _split_options(als, test_days_help="held-out last days (default 1)")
    als.add_argument("--factors", type=int, default=64)
    als.add_argument("--iterations", type=int, default=5, help="ALS iterations (each one is a noisy release)")
    als.add_argument("--max-items-per-user", type=int, default=8, help="contribution bound: items kept per shopper")
    als.add_argument("--top-items", type=int, default=2000, help="items given factors, chosen by noisy popularity")
    als.add_argument("--out", help="JSON report path")
    add_no_progress(als)
    als.set_defaults(func=_cmd_private_als)
