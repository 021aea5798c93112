"""``vitrine train|evaluate|bench generator``: the generator study's commands (engine.evaluation.generator_study)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from engine.cli.options import add_json, add_no_progress, from_args, progress, write_json


def _dataset(args: argparse.Namespace, *, name: str | None = None, path: str | None = None):
    from engine.evaluation.generator_runs import load_dataset

    return load_dataset(
        name or args.dataset, Path(path or args.data), max_images=args.max_images, show_progress=progress(args)
    )


def _threads(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)


def _cmd_train(args: argparse.Namespace) -> int:
    from engine.evaluation.generator_runs import train_run

    _threads(args)
    aug = {"auto": None, "on": True, "off": False}[args.diffaugment]
    options = ("model", "seconds", "steps", "batch_size", "arch", "width", "seed", "checkpoint_every", "resume")
    kwargs = {"diffaugment": aug, "data_path": str(Path(args.data).resolve()), **from_args(args, *options)}
    if not args.distributed:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError(
                f"torchrun started {os.environ['WORLD_SIZE']} processes, but without --distributed each would "
                "train the whole run alone into the same --out: add --distributed"
            )
        info = train_run(_dataset(args), Path(args.out), device=args.device, show_progress=progress(args), **kwargs)
    else:
        from engine.training.distributed import process_group

        with process_group(args.device, os.environ) as (ranks, device):
            if not ranks.is_main:  # one process speaks for the run
                logging.getLogger().setLevel(logging.WARNING)
                args.no_progress = True
            ds = _dataset(args)
            info = train_run(ds, Path(args.out), device=device, show_progress=progress(args), ranks=ranks, **kwargs)
        if not ranks.is_main:
            return 0
    print(
        f"{info['model'].upper()} on {info['dataset']}: {info['steps']} steps, {info['training_seconds']:.0f} s "
        f"({'stopped by --seconds' if info['stopped_early'] else 'all steps'}); run in {args.out}"
    )
    print(f"evaluate it with: vitrine evaluate generator --run {args.out}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from engine.evaluation.generator_runs import read_run
    from engine.evaluation.generator_study import evaluate_run, format_report

    _threads(args)
    info = read_run(Path(args.run))
    data = args.data or info["data_path"]
    if not data:
        raise SystemExit(f"{args.run}/run.json records no data path; pass --data")
    ds = _dataset(args, name=info["dataset"], path=data)
    judges_dir = Path(args.judges) if args.judges else Path(args.run).parent / f"judges-{info['dataset']}"
    report = evaluate_run(
        Path(args.run),
        ds,
        judges_dir=judges_dir,
        show_progress=progress(args),
        **from_args(args, "samples", "classifier_epochs", "device"),
    )
    print(format_report(report))
    print(f"\nreport: {Path(args.run) / 'report.json'}\ncontact sheet: {Path(args.run) / 'contact_sheet.png'}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from engine.evaluation.generator_study import benchmark, format_benchmark

    _threads(args)
    result = benchmark(
        _dataset(args),
        Path(args.out),
        data_path=str(Path(args.data).resolve()),
        show_progress=progress(args),
        **from_args(args, "seconds", "compare_diffaugment", "samples", "classifier_epochs", "seed", "device"),
    )
    print(format_benchmark(result))
    print(f"\nreport: {Path(args.out) / 'benchmark.json'}")
    write_json(args.json, result, default=float)
    return 0


def _common(p: argparse.ArgumentParser, *, needs_data: bool = True) -> None:
    from engine.evaluation.generator_choices import DATASETS

    if needs_data:
        p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--data", required=needs_data, help="the dataset's folder (e.g. ../shared/datasets/fashion_mnist)")
    p.add_argument("--max-images", type=int, help="sample this many images of the dataset (default: all)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:n]")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    add_no_progress(p)


def _eval_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", type=int, default=5000, help="generated and real images per figure")
    p.add_argument("--classifier-epochs", type=int, default=6, help="epochs of the feature net and the judge")


def register(
    train_sub: argparse._SubParsersAction,
    evaluate_sub: argparse._SubParsersAction,
    bench_sub: argparse._SubParsersAction,
) -> None:
    """Add the ``generator`` subcommand under ``train``, ``evaluate`` and ``bench``."""
    from engine.evaluation.generator_choices import MODELS

    t = train_sub.add_parser("generator", help="train the conditional GAN or VAE on a labelled image dataset")
    _common(t)
    t.add_argument("--out", required=True, help="run folder")
    t.add_argument("--model", default="gan", choices=MODELS)
    t.add_argument("--seconds", type=float, help="stop after this much training time (same budget for GAN and VAE)")
    t.add_argument("--steps", type=int, default=100_000)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--arch", default="dcgan", choices=("dcgan", "resnet", "upsample"))
    t.add_argument("--width", type=int, default=32, help="generator/discriminator/encoder base width")
    t.add_argument("--diffaugment", default="auto", choices=("auto", "on", "off"), help="auto: on below 20k images")
    t.add_argument("--checkpoint-every", type=int, default=500)
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument(
        "--distributed",
        action="store_true",
        help="one of the processes torchrun started (GAN only): each trains on its share of every batch; "
        "gloo with --device cpu, NCCL with --device cuda (the GPU numbered LOCAL_RANK)",
    )
    t.set_defaults(func=_cmd_train)

    e = evaluate_sub.add_parser("generator", help="FD, KID, PRDC, conditional accuracy, diversity, memorisation")
    e.add_argument("--run", required=True, help="a run folder written by `vitrine train generator`")
    e.add_argument("--judges", help="judges folder (default: judges-<dataset> beside the run)")
    _common(e, needs_data=False)
    _eval_options(e)
    e.set_defaults(func=_cmd_evaluate)

    b = bench_sub.add_parser("generator", help="GAN against VAE at equal training time, with the issue's targets")
    _common(b)
    _eval_options(b)
    b.add_argument("--out", required=True, help="folder for the runs and benchmark.json")
    b.add_argument("--seconds", type=float, required=True, help="training time per model")
    b.add_argument("--compare-diffaugment", action="store_true", help="also train the GAN with DiffAugment flipped")
    b.add_argument("--seed", type=int, default=0)
    add_json(b)
    b.set_defaults(func=_cmd_bench)
