"""``vitrine batch image-sets``: render every known shopper's image set in advance, on Ray Data.

The image key, the Redis URL and its key prefix are read here, from the same variables the API reads
(``VITRINE_IMAGE_KEY``, ``VITRINE_REDIS_URL``, ``VITRINE_REDIS_PREFIX``), so that the job signs ids the API
accepts and writes where the API reads.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from engine.cli.options import add_artifacts, add_json, add_no_progress, add_version, progress, write_json


def image_key(artifacts: Path) -> bytes:
    """The API's image key: ``VITRINE_IMAGE_KEY``, else the key file in the artifacts root."""
    from engine.serving.image_ids import MIN_KEY_BYTES, load_or_create_key

    secret = os.environ.get("VITRINE_IMAGE_KEY")
    if secret:
        if len(secret.encode()) < MIN_KEY_BYTES:
            raise ValueError(f"VITRINE_IMAGE_KEY must be at least {MIN_KEY_BYTES} characters, as the API requires")
        return secret.encode()
    return load_or_create_key(artifacts)


def precompute(
    artifacts: Path,
    *,
    version: str | None = None,
    redis_url: str | None = None,
    ray_address: str | None = None,
    limit: int | None = None,
    n: int = 8,
    neighbours: int = 4,
    workers: int | None = None,
    batch_size: int = 16,
    pngs: bool = False,
    show_progress: bool = True,
    json_path: str | None = None,
) -> int:
    """Run the job and print its report (and write it to ``json_path``); what ``--precompute`` also calls."""
    from engine.batch.image_sets import precompute_image_sets
    from engine.serving.precomputed import SetParams
    from engine.serving.precomputed_store import open_precomputed_store

    redis_url = redis_url or os.environ.get("VITRINE_REDIS_URL") or None
    report = precompute_image_sets(
        artifacts,
        key=image_key(artifacts),
        version=version,
        store=open_precomputed_store(
            artifacts, redis_url, redis_prefix=os.environ.get("VITRINE_REDIS_PREFIX", "vitrine:")
        ),
        params=SetParams(n=n, neighbours=neighbours),
        limit=limit,
        ray_address=ray_address,
        workers=workers,
        batch_size=batch_size,
        pngs=pngs,
        show_progress=show_progress,
    )
    print(report.render())
    write_json(json_path, report.to_dict())
    return 0


def _cmd_image_sets(args: argparse.Namespace) -> int:
    return precompute(
        Path(args.artifacts),
        version=args.version,
        redis_url=args.redis_url,
        ray_address=args.ray_address,
        limit=args.limit,
        n=args.n,
        neighbours=args.neighbours,
        workers=args.workers,
        batch_size=args.batch_size,
        pngs=args.pngs,
        show_progress=progress(args),
        json_path=args.json,
    )


def add_precompute_flag(parser: argparse.ArgumentParser) -> None:
    """``--precompute``: after a promotion, run ``vitrine batch image-sets`` on the promoted bundle."""
    parser.add_argument(
        "--precompute",
        action="store_true",
        help="after promoting, render every known shopper's image set in advance (vitrine batch image-sets, "
        "default settings); off by default",
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``vitrine batch`` and its ``image-sets`` subcommand."""
    batch = sub.add_parser("batch", help="batch jobs on Ray Data")
    batch_sub = batch.add_subparsers(dest="batch_command", required=True)
    sets = batch_sub.add_parser(
        "image-sets",
        help="render every known shopper's image set in advance into the store the API reads first",
    )
    add_artifacts(sets)
    add_version(sets)
    sets.add_argument("--ray-address", help="join this Ray cluster (default: start a local Ray on this machine)")
    sets.add_argument("--limit", type=int, help="only the first N shoppers (by pseudonym)")
    sets.add_argument("--n", type=int, default=8, help="images per set, as the API's n (default 8)")
    sets.add_argument("--neighbours", type=int, default=4, help="catalogue items per image (default 4)")
    sets.add_argument("--workers", type=int, help="render workers, one CPU each (default: every CPU)")
    sets.add_argument("--batch-size", type=int, default=16, help="shoppers per batch a worker renders (16)")
    sets.add_argument("--pngs", action="store_true", help="also store the images' PNGs")
    sets.add_argument("--redis-url", help="write to this Redis (default $VITRINE_REDIS_URL; unset: the SQLite file)")
    add_json(sets)
    add_no_progress(sets)
    sets.set_defaults(func=_cmd_image_sets)
