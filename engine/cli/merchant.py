"""``vitrine generate`` and ``vitrine tag`` (the merchant's tools, as ``GET /v1/generate`` and ``POST /v1/tag``
serve them), and their measurements ``vitrine evaluate tagging`` and ``vitrine evaluate compositional``."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli.options import add_artifacts, add_no_progress, add_version, from_args, optional_path, progress


def _attribute(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, such as sleeve=long; got {text!r}")
    return name.strip(), value.strip()


def _cmd_generate(args: argparse.Namespace) -> int:
    from engine.serving.offline import generate_product_files

    values = dict(args.attribute)
    for name, value in (("class", args.class_), ("colour", args.colour), ("pattern", args.pattern)):
        if value is not None:
            values[name] = value
    answer = generate_product_files(
        Path(args.artifacts),
        values,
        Path(args.out),
        **from_args(args, "version", "n", "seed", "neighbours"),
    )
    look = ", ".join(f"{k} {v}" for k, v in answer["condition"].items())
    where = (
        f"in the catalogue ({answer['catalogue_items']} items)" if answer["in_catalogue"] else "not in the catalogue"
    )
    print(f"{look}: {where}; bundle {answer['bundle_version']}, seed {answer['seed']}")
    for img in answer["images"]:
        judged = ", ".join(f"{k} {v:.2f}" for k, v in img["judged"].items())
        nearest = ", ".join(it["item_id"] for it in img["nearest"])
        print(f"  {Path(args.out) / img['file']}  judged: {judged}  nearest items: {nearest}")
    print(f"\nanswer: {Path(args.out) / 'generate.json'}")
    return 0


def _cmd_tag(args: argparse.Namespace) -> int:
    from engine.serving.offline import tag_files

    summary = tag_files(
        Path(args.artifacts),
        Path(getattr(args, "in")),
        Path(args.out),
        version=args.version,
        top_k=args.top_k,
        show_progress=progress(args),
    )
    print(
        f"tagged {summary['tagged']} of {summary['images']} photos with bundle {summary['bundle_version']}"
        + (f"; {summary['failed']} could not be read (see the error column)" if summary["failed"] else "")
    )
    print(f"tags: {summary['out']}")
    return 0 if summary["tagged"] else 1


def _cmd_evaluate_tagging(args: argparse.Namespace) -> int:
    import torch

    from engine.evaluation.tagging import evaluate_bundle_tagging, evaluate_dataset_tagging, render

    torch.set_num_threads(args.threads)
    out = optional_path(args.out)
    if args.dataset:
        if not args.data:
            raise ValueError("--dataset needs --data (the dataset's folder)")
        report = evaluate_dataset_tagging(
            args.dataset,
            Path(args.data),
            out=out,
            show_progress=progress(args),
            **from_args(args, "epochs", "seconds", "max_images", "seed", "device"),
        )
    else:
        if args.data:
            raise ValueError(
                "--data names a dataset to train a classifier on: give --dataset too, or measure the bundle's own "
                "classifier with --artifacts (and --version) alone"
            )
        report = evaluate_bundle_tagging(
            Path(args.artifacts), version=args.version, out=out, show_progress=progress(args)
        )
    print(render(report))
    if out:
        print(f"\nreport: {out}")
    return 0


def _cmd_evaluate_compositional(args: argparse.Namespace) -> int:
    import torch

    from engine.evaluation.compositional import evaluate_compositional, render

    torch.set_num_threads(args.threads)
    out = optional_path(args.out)
    report = evaluate_compositional(
        Path(args.data),
        attributes=tuple(a.strip() for a in args.attributes.split(",")) if args.attributes else None,
        out=out,
        show_progress=progress(args),
        **from_args(args, "holdout", "min_items", "steps", "seconds", "judge_epochs", "samples", "seed", "device"),
    )
    print(render(report))
    if out:
        print(f"\nreport: {out}")
    return 0


def register(sub: argparse._SubParsersAction, evaluate_sub: argparse._SubParsersAction) -> None:
    """Add ``vitrine generate``, ``vitrine tag`` and their ``vitrine evaluate`` subcommands."""
    g = sub.add_parser(
        "generate", help="images of a product with the attribute values asked for, in the catalogue or not"
    )
    g.add_argument("--class", dest="class_", metavar="CLASS", help="the product's class, e.g. coat")
    g.add_argument("--colour", help="its colour")
    g.add_argument("--pattern", help="its pattern")
    g.add_argument(
        "--attribute",
        type=_attribute,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other attribute of the catalogue (repeat it)",
    )
    g.add_argument("--n", type=int, default=4, help="number of images")
    g.add_argument("--seed", type=int, default=0, help="the same seed gives the same images")
    g.add_argument("--neighbours", type=int, default=4, help="nearest catalogue items per image")
    g.add_argument("--out", required=True, help="folder for the PNGs and generate.json")
    add_artifacts(g)
    add_version(g)
    g.set_defaults(func=_cmd_generate)

    t = sub.add_parser("tag", help="tag a folder of product photos with the bundle's classifier into a CSV")
    t.add_argument("--in", required=True, metavar="DIR", help="folder of .png/.jpg photos (searched recursively)")
    t.add_argument("--out", required=True, help="CSV: one row per photo")
    t.add_argument("--top-k", type=int, default=3, help="values kept per attribute")
    add_artifacts(t)
    add_version(t)
    add_no_progress(t)
    t.set_defaults(func=_cmd_tag)

    from engine.evaluation.generator_choices import DATASETS

    e = evaluate_sub.add_parser(
        "tagging", help="tagging accuracy per attribute on held-out photos, beside the majority baseline"
    )
    add_artifacts(e, help="without --dataset: measure this registry's bundle's classifier (as served)")
    add_version(e)
    e.add_argument("--dataset", choices=DATASETS, help="train a classifier on this dataset's training split instead")
    e.add_argument("--data", help="with --dataset: the dataset's folder")
    e.add_argument("--epochs", type=int, default=3, help="with --dataset: classifier epochs")
    e.add_argument("--seconds", type=float, default=300.0, help="with --dataset: stop training after this long")
    e.add_argument("--max-images", type=int, help="with --dataset: sample this many photos (default: all)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="cpu", help="cpu or cuda[:n]")
    e.add_argument("--threads", type=int, default=2, help="torch threads")
    e.add_argument("--out", help="JSON report path")
    add_no_progress(e)
    e.set_defaults(func=_cmd_evaluate_tagging)

    c = evaluate_sub.add_parser(
        "compositional", help="judged accuracy of images of attribute combinations the generator never saw"
    )
    c.add_argument("--data", required=True, help="a demo store (or any store with several attributes)")
    c.add_argument("--holdout", type=int, default=8, help="combinations removed from the generator's training")
    c.add_argument("--attributes", help="attributes whose combinations count, e.g. class,colour (default: all)")
    c.add_argument("--min-items", type=int, default=4, help="photos a combination needs to be drawn")
    c.add_argument("--steps", type=int, default=400, help="GAN steps")
    c.add_argument("--seconds", type=float, default=240.0, help="stop the GAN after this long")
    c.add_argument("--judge-epochs", type=int, default=6)
    c.add_argument("--samples", type=int, default=32, help="images judged per combination")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--device", default="cpu", help="cpu or cuda[:n]")
    c.add_argument("--threads", type=int, default=2, help="torch threads")
    c.add_argument("--out", help="JSON report path")
    add_no_progress(c)
    c.set_defaults(func=_cmd_evaluate_compositional)
