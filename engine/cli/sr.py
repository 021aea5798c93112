"""``vitrine train|evaluate|bench sr``, ``vitrine evaluate restore`` and ``vitrine enhance``: super-resolution and
photo restoration (``engine.training.sr``, ``engine.evaluation.sr``, ``engine.benchmarks.sr``,
``engine.serving.enhance``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from engine.cli.options import (
    add_artifacts,
    add_json,
    add_no_progress,
    add_version,
    optional_path,
    progress,
    write_json,
)

if TYPE_CHECKING:  # handlers import the engine lazily, so `vitrine --help` stays light
    from engine.training.sr import SRTrainConfig

_DATASETS = "demo | hm | myntra | folder"
_MODEL_HELP = "an SR run folder (`vitrine train sr --out`) instead of a bundle's sr/ component"


def _threads(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)


def _train_config(args: argparse.Namespace, base: SRTrainConfig | None = None) -> SRTrainConfig:
    import dataclasses

    from engine.training.sr import SRTrainConfig

    changes = {k: getattr(args, k) for k in ("seconds", "steps", "max_images", "width", "blocks") if getattr(args, k)}
    return dataclasses.replace(base or SRTrainConfig(), **changes)


def _cmd_train(args: argparse.Namespace) -> int:
    _threads(args)
    if args.dataset:
        from engine.training.sr import train_sr_run

        if not args.out:
            raise ValueError("vitrine train sr --dataset needs --out (the folder of the trained nets)")
        manifest = train_sr_run(
            args.dataset,
            optional_path(args.data),
            Path(args.out),
            _train_config(args),
            seed=args.seed,
            show_progress=progress(args),
        )
        _print_held_out(manifest["metrics"])
        print(f"nets written to {args.out}; measure them with: vitrine evaluate sr --model {args.out} ...")
        return 0
    from engine.training.retrain import retrain_sr

    version, metrics = retrain_sr(
        Path(args.artifacts), parent=args.parent, config=_bundle_config(args), show_progress=progress(args)
    )
    _print_held_out(metrics)
    print(f"bundle {version} written (sr/ retrained; other components from its parent)")
    print(f"promote it with: vitrine promote {version} --artifacts {args.artifacts}")
    return 0


def _bundle_config(args: argparse.Namespace) -> SRTrainConfig | None:
    """The parent bundle's SR config with the command's changes, or None to keep it as it is."""
    if not any(getattr(args, k) for k in ("seconds", "steps", "max_images", "width", "blocks")):
        return None
    from engine.artifacts.registry import ArtifactRegistry
    from engine.training.config import TrainConfig, build_config
    from models.io import read_json

    registry = ArtifactRegistry(Path(args.artifacts))
    parent = args.parent or registry.current()
    if parent is None:
        raise ValueError(f"no serving bundle under {args.artifacts}; pass --parent")
    parent_config = build_config(TrainConfig, read_json(registry.path(parent) / "manifest.json")["config"], "bundle")
    return _train_config(args, parent_config.sr)


def _print_held_out(metrics: dict) -> None:
    for role in ("x2", "x4"):
        p = metrics[role]["psnr_y"]
        gain = p["sr"] - p["bicubic"]
        print(f"  {role}: {p['sr']:.2f} dB PSNR-Y on held-out images (bicubic {p['bicubic']:.2f}, {gain:+.2f})")
    for name, p in metrics["restore"]["psnr_y"].items():
        print(f"  restore, {name}: {p['restored']:.2f} dB (degraded {p['degraded']:.2f})")


def _evaluate(args: argparse.Namespace, task: str) -> int:
    from engine.evaluation.sr import format_restore, format_sr, run_evaluation

    _threads(args)
    report = run_evaluation(
        task,
        dataset=args.dataset,
        data=optional_path(args.data),
        artifacts=Path(args.artifacts),
        version=args.version,
        model=optional_path(args.model),
        images=args.images,
        seed=args.seed,
        show_progress=progress(args),
    )
    nets = report["nets"]
    print(f"{task} on {args.dataset} (held-out split), nets of {nets.get('bundle') or nets.get('model')}")
    print(format_sr(report["results"]) if task == "sr" else format_restore(report["results"]))
    if args.out:
        from models.io import write_json as write_report

        write_report(Path(args.out), report, default=float)
        print(f"report: {args.out}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from engine.benchmarks.sr import bench_sr, format_bench
    from engine.serving.enhance import load_enhancer

    enhancer, source = load_enhancer(
        artifacts=Path(args.artifacts), version=args.version, model=optional_path(args.model)
    )
    report = {
        **bench_sr(enhancer, repeats=args.repeats, threads=args.threads),
        "nets": source.get("bundle") or source.get("model"),
    }
    print(format_bench(report))
    write_json(args.json, report)
    return 0


def _cmd_enhance(args: argparse.Namespace) -> int:
    from engine.serving.enhance import enhance_folder, load_enhancer

    _threads(args)
    enhancer, source = load_enhancer(
        artifacts=Path(args.artifacts), version=args.version, model=optional_path(args.model)
    )
    result = enhance_folder(
        enhancer, Path(args.in_dir), Path(args.out), sheet_images=args.sheet, show_progress=progress(args)
    )
    print(
        f"{len(result.written)} photos restored into {args.out} (nets of {source.get('bundle') or source.get('model')})"
    )
    for line in result.skipped:
        print(f"  skipped {line}")
    if result.contact_sheet:
        print(f"before/after contact sheet: {result.contact_sheet}")
    return 0 if result.written else 1


def _add_source(parser: argparse.ArgumentParser) -> None:
    add_artifacts(parser)
    add_version(parser)
    parser.add_argument("--model", help=_MODEL_HELP)


def _add_training(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, help="training time of the three nets together")
    parser.add_argument("--steps", type=int, help="most steps per net")
    parser.add_argument("--max-images", type=int, help="high-resolution images read for training")
    parser.add_argument("--width", type=int, help="channels of each net (default 32)")
    parser.add_argument("--blocks", type=int, help="residual blocks of each net (default 2)")


def register(
    sub: argparse._SubParsersAction,
    train_sub: argparse._SubParsersAction,
    evaluate_sub: argparse._SubParsersAction,
    bench_sub: argparse._SubParsersAction,
) -> None:
    """Add ``vitrine enhance`` and the ``sr`` subcommands of train, evaluate (with ``restore``) and bench."""
    train = train_sub.add_parser(
        "sr", help="train the super-resolution and restoration nets: a new bundle, or a run on a dataset (--dataset)"
    )
    add_artifacts(train)
    train.add_argument("--parent", help="bundle to start from (default: the serving one)")
    train.add_argument("--dataset", help=f"train on a dataset's training split instead: {_DATASETS}")
    train.add_argument("--data", help="the dataset's folder (hm, myntra, folder)")
    train.add_argument("--out", help="with --dataset: the folder to write the nets to")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    _add_training(train)
    add_no_progress(train)
    train.set_defaults(func=_cmd_train)

    for task, help_text in (
        ("sr", "PSNR/SSIM of the served ×2/×4 super-resolution beside bicubic and Lanczos, on held-out images"),
        ("restore", "PSNR/SSIM of the served restoration beside median, unsharp mask and NLM, on degraded images"),
    ):
        ev = evaluate_sub.add_parser(task, help=help_text)
        _add_source(ev)
        ev.add_argument("--dataset", default="demo", help=f"{_DATASETS} (default demo: drawings at 256 px)")
        ev.add_argument("--data", help="the dataset's folder (hm, myntra, folder)")
        ev.add_argument("--images", type=int, default=200, help="held-out images to measure on (default 200)")
        ev.add_argument("--seed", type=int, default=0)
        ev.add_argument("--threads", type=int, help="torch threads (default: torch's)")
        ev.add_argument("--out", help="write the JSON report here")
        add_no_progress(ev)
        ev.set_defaults(func=lambda args, task=task: _evaluate(args, task))

    bench = bench_sub.add_parser("sr", help="milliseconds per 64 → 256 image of the served super-resolution")
    _add_source(bench)
    bench.add_argument("--repeats", type=int, default=200)
    bench.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the goal's setting)")
    add_json(bench)
    bench.set_defaults(func=_cmd_bench)

    enhance = sub.add_parser("enhance", help="restore a folder of catalogue photos (denoise, deblock, deblur)")
    enhance.add_argument("--in", dest="in_dir", required=True, help="folder of photos (PNG, JPEG, WebP, ...)")
    enhance.add_argument("--out", required=True, help="folder for the restored PNGs and contact_sheet.png")
    _add_source(enhance)
    enhance.add_argument("--sheet", type=int, default=12, help="photos on the before/after contact sheet")
    enhance.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    add_no_progress(enhance)
    enhance.set_defaults(func=_cmd_enhance)
