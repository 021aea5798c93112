"""``vitrine data``: data sets (the embedded demo store)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from engine.cli.options import add_no_progress, progress


def _cmd_demo(args: argparse.Namespace) -> int:
    from engine.world import DemoStoreConfig, write_demo_store

    overrides = {k: v for k, v in {"n_items": args.items, "n_users": args.users, "weeks": args.weeks}.items() if v}
    config = DemoStoreConfig(seed=args.seed, **overrides)
    summary = write_demo_store(Path(args.out), config, show_progress=progress(args))
    print(json.dumps(summary, indent=2, default=str))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``vitrine data demo``."""
    data = sub.add_parser("data", help="data sets").add_subparsers(dest="data_command", required=True)
    demo = data.add_parser("demo", help="generate the embedded demo store (no network)")
    demo.add_argument("--out", required=True, help="folder to write the store into")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--items", type=int, help="catalogue size (default 2000)")
    demo.add_argument("--users", type=int, help="shoppers (default 3000)")
    demo.add_argument("--weeks", type=int, help="weeks of logs (default 8)")
    add_no_progress(demo)
    demo.set_defaults(func=_cmd_demo)
