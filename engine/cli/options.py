"""Options and plumbing that several ``vitrine`` command groups share.

A flag that appears in many commands is declared here once, so its default and help read the same everywhere.
Option names match the engine function's parameter names, so a handler passes them on with :func:`from_args`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

DEFAULT_ARTIFACTS = "data/artifacts"


def add_artifacts(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """``--artifacts``: the bundle registry, ``data/artifacts`` unless given."""
    parser.add_argument("--artifacts", default=DEFAULT_ARTIFACTS, help=help)


def add_version(parser: argparse.ArgumentParser) -> None:
    """``--version``: a bundle version, the serving one unless given."""
    parser.add_argument("--version", help="bundle version (default: the serving one)")


def add_json(parser: argparse.ArgumentParser) -> None:
    """``--json``: a file that also receives a benchmark's figures."""
    parser.add_argument("--json", help="also write the figures to this JSON file")


def add_no_progress(parser: argparse.ArgumentParser) -> None:
    """``--no-progress``: turn off the progress bars (logs and CI)."""
    parser.add_argument("--no-progress", action="store_true")


def from_args(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The named options as keyword arguments, for an engine function whose parameters share the options' names."""
    return {name: getattr(args, name) for name in names}


def progress(args: argparse.Namespace) -> bool:
    """Whether to show progress bars: yes unless ``--no-progress``."""
    return not args.no_progress


def optional_path(value: str | None) -> Path | None:
    """An optional path option as a ``Path`` (``None`` when it was not given)."""
    return Path(value) if value else None


def write_json(path: str | None, payload: Any, **dumps: Any) -> None:
    """Write ``payload`` as indented JSON to ``path`` when one was given (``--json``); ``dumps``: json.dumps options."""
    if path:
        Path(path).write_text(json.dumps(payload, indent=2, **dumps))
