"""``vitrine serve``, ``bundles`` and ``promote``: run the HTTP API and choose the bundle it serves."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from engine.cli.batch import add_precompute_flag, precompute
from engine.cli.options import add_artifacts


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    os.environ["VITRINE_ARTIFACTS"] = str(Path(args.artifacts).resolve())
    url = f"http://{args.host}:{args.port}"
    if args.demo is not None:
        os.environ["VITRINE_DEMO"] = "1"
        os.environ["VITRINE_DEMO_DATA"] = str(Path(args.demo).resolve())
    print(
        f"Vitrine serving on {url}\n  docs: {url}/docs\n  health: {url}/healthz"
        + (f"\n  demo: {url}/demo" if args.demo is not None else ""),
        flush=True,
    )
    if args.workers > 1 and not os.environ.get("VITRINE_REDIS_URL"):
        print(
            f"warning: {args.workers} workers without VITRINE_REDIS_URL: each keeps its own sessions and "
            "optimised images, so a shopper's next request may land where neither is known; "
            "set VITRINE_REDIS_URL=redis://host:6379/0 to share them",
            file=sys.stderr,
            flush=True,
        )
    shared_metrics = None
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # every worker writes its metrics here, so that /metrics answers the sum whichever worker serves it;
        # set before the workers start (prometheus-client reads it at import) and empty, as it must be
        shared_metrics = tempfile.mkdtemp(prefix="vitrine-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = shared_metrics
    try:
        uvicorn.run(
            "api.app:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=args.log_level,
            access_log=False,  # it would log shopper ids in paths; api.access_log logs route templates instead
        )
    finally:
        if shared_metrics is not None:
            shutil.rmtree(shared_metrics, ignore_errors=True)
    return 0


def _cmd_bundles(args: argparse.Namespace) -> int:
    from engine.artifacts.promotion import key_metric
    from engine.artifacts.registry import ArtifactRegistry

    infos = ArtifactRegistry(Path(args.artifacts)).versions()
    if not infos:
        print(f"no bundles under {args.artifacts}; train one with `vitrine train`")
        return 0
    for info in infos:
        metric = key_metric(info.manifest)
        shown = f"{metric[0]} = {metric[1]:.4f}" if metric else "no validation metric"
        parents = info.manifest.get("parents") or []
        lineage = f"  retrained {'+'.join(info.manifest.get('retrained', []))} from {parents[0]}" if parents else ""
        created = info.manifest.get("created_at", "?")
        print(f"{'*' if info.serving else ' '} {info.version}  {created}  {shown}{lineage}")
    return 0


def _cmd_promote(args: argparse.Namespace) -> int:
    from engine.artifacts.promotion import promote_bundle
    from engine.artifacts.registry import ArtifactRegistry, BundleRefused

    try:
        promote_bundle(ArtifactRegistry(Path(args.artifacts)), args.version, force=args.force, tolerance=args.tolerance)
    except BundleRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    print(f"{args.version} now serves")
    if args.precompute:
        return precompute(Path(args.artifacts), version=args.version)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``vitrine serve``, ``vitrine bundles`` and ``vitrine promote``."""
    serve = sub.add_parser("serve", help="run the HTTP API")
    add_artifacts(serve)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--demo",
        nargs="?",
        const="data/demo",
        default=None,
        metavar="STORE",
        help="serve the storefront demo page (/demo) for the demo store at STORE (default data/demo); off by default",
    )
    serve.set_defaults(func=_cmd_serve)

    bundles = sub.add_parser("bundles", help="list bundles and their key metric (* = serving)")
    add_artifacts(bundles)
    bundles.set_defaults(func=_cmd_bundles)

    promote = sub.add_parser("promote", help="make a bundle the serving one, after its checks")
    promote.add_argument("version")
    add_artifacts(promote)
    promote.add_argument("--force", action="store_true", help="promote even if the key metric drops")
    promote.add_argument("--tolerance", type=float, default=0.05)
    add_precompute_flag(promote)
    promote.set_defaults(func=_cmd_promote)
