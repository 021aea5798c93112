"""``vitrine``: the one command-line entry point. Each subcommand is a thin wrapper over one engine function.

One module per command group (``data``, ``train``, ``evaluate``, ``serve`` with ``bundles`` and ``promote``,
``bench``, ``experiments``, ``generator``, the generator study's commands under train, evaluate and bench,
``merchant``: ``generate`` and ``tag`` with their evaluations, ``batch``: jobs on Ray Data (``image-sets``), and
``sr``: super-resolution's and restoration's commands under train, evaluate and bench, with ``enhance``);
this module composes their parsers and is the only place in the code base that configures logging. Handlers import
the engine lazily, so ``vitrine --help`` does not load the models.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from engine.cli import batch, bench, data, evaluate, experiments, generator, merchant, privacy, serve, sr, train

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


def build_parser() -> argparse.ArgumentParser:
    """The ``vitrine`` parser: every command group's subcommands, each bound to its handler as ``func``."""
    parser = argparse.ArgumentParser(prog="vitrine", description="Personalised product imagery.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    data.register(sub)
    train_sub = train.register(sub)
    evaluate_sub = evaluate.register(sub)
    serve.register(sub)
    privacy.register(sub)
    bench_sub = bench.register(sub)
    generator.register(train_sub, evaluate_sub, bench_sub)
    sr.register(sub, train_sub, evaluate_sub, bench_sub)
    merchant.register(sub, evaluate_sub)
    experiments.register(sub)
    batch.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``vitrine`` with ``argv`` (default: the process's arguments); returns the exit status."""
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as exc:
        logger.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
