"""``vitrine train``: train every model into a bundle, or retrain one component of a bundle."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli.batch import add_precompute_flag, precompute
from engine.cli.options import add_artifacts, add_no_progress, from_args, optional_path, progress

_PARENT_HELP = "bundle to start from (default: the serving one)"
_EVENTS_HELP = (
    "also train on the shopper events the API stored in this event store (a database URL such as "
    "sqlite:///data/events.db; repeat for several); clicks on generated images are not used yet"
)


def _cmd_train(args: argparse.Namespace) -> int:
    from engine.training.config import load_train_config
    from engine.training.pipeline import train_bundle
    from engine.training.warm_start import ContinueFrom

    if not args.data:
        raise ValueError("vitrine train needs --data (a demo store or an H&M folder)")
    if args.precompute and not args.promote:
        raise ValueError("--precompute renders the sets of the promoted bundle: add --promote")
    overrides = {"seed": args.seed} if args.seed is not None else {}
    if args.device:
        overrides.update({"gan_training": {"device": args.device}, "classifier_training": {"device": args.device}})
    config = load_train_config(args.preset, optional_path(args.config), overrides)
    version = train_bundle(
        Path(args.data),
        Path(args.artifacts),
        config,
        show_progress=progress(args),
        promote=args.promote,
        events=args.events or (),
        continue_from=ContinueFrom(version=args.continue_from, fresh=args.fresh),
    )
    print(f"bundle {version} written to {Path(args.artifacts) / version}" + (" and promoted" if args.promote else ""))
    if args.precompute:
        return precompute(Path(args.artifacts), version=version, show_progress=progress(args))
    return 0


def _cmd_embeddings(args: argparse.Namespace) -> int:
    from engine.training.pipeline import retrain_embeddings

    version, comparison = retrain_embeddings(
        Path(args.data),
        Path(args.artifacts),
        show_progress=progress(args),
        events=args.events or (),
        **from_args(args, "since", "parent"),
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


def _cmd_visual(args: argparse.Namespace) -> int:
    from engine.training.pipeline import retrain_visual

    version, m = retrain_visual(Path(args.artifacts), parent=args.parent, show_progress=progress(args))
    print(f"bundle {version} written (visual encoder added; other components from its parent)")
    print(f"  AUC {m['auc']['visual_encoder']:.4f}; cold-item recall@{m['k']} {m['cold_recall']['visual_encoder']:.4f}")
    print(f"promote it with: vitrine promote {version} --artifacts {args.artifacts}")
    return 0


def register(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Add ``vitrine train`` and its ``embeddings`` and ``visual`` subcommands; returns the latter's group."""
    train = sub.add_parser("train", help="train every model and write a bundle")
    train_sub = train.add_subparsers(dest="train_command")
    emb = train_sub.add_parser("embeddings", help="retrain only the embeddings; other components from the parent")
    emb.add_argument("--data", required=True)
    add_artifacts(emb)
    emb.add_argument("--since", help="use only events from this date/time on (ISO 8601)")
    emb.add_argument("--parent", help=_PARENT_HELP)
    # SUPPRESS: `vitrine train --events X embeddings` keeps X (a subcommand default would overwrite it)
    emb.add_argument("--events", action="append", metavar="DATABASE_URL", help=_EVENTS_HELP, default=argparse.SUPPRESS)
    add_no_progress(emb)
    emb.set_defaults(func=_cmd_embeddings)
    vis = train_sub.add_parser("visual", help="add a visual encoder to a bundle; other components from the parent")
    add_artifacts(vis)
    vis.add_argument("--parent", help=_PARENT_HELP)
    add_no_progress(vis)
    vis.set_defaults(func=_cmd_visual)

    train.add_argument("--data", help="a data folder (demo store or H&M layout)")
    add_artifacts(train, help="bundle root (default data/artifacts)")
    train.add_argument("--preset", default="demo", help="demo | hm | full | tiny (default demo)")
    train.add_argument("--config", help="JSON file overriding the preset (unknown keys are errors)")
    train.add_argument("--events", action="append", metavar="DATABASE_URL", help=_EVENTS_HELP)
    train.add_argument("--seed", type=int)
    train.add_argument("--device", help="cpu or cuda for the GAN and classifier (default cpu)")
    train.add_argument("--promote", action="store_true", help="make the new bundle the serving one if it passes")
    train.add_argument(
        "--continue-from",
        metavar="VERSION",
        help="continue the GAN from this bundle's (default: from the serving bundle's when it fits the catalogue)",
    )
    train.add_argument("--fresh", action="store_true", help="train the GAN from scratch, continuing from no bundle")
    add_precompute_flag(train)
    add_no_progress(train)
    train.set_defaults(func=_cmd_train)
    return train_sub
