"""Promotion: point the registry at a new bundle only if it loads, passes its checks, and does not lower
the key validation metric beyond a tolerance (unless forced)."""

from __future__ import annotations

import logging

from engine.artifacts.bundle import load_bundle
from engine.artifacts.registry import ArtifactRegistry, BundleRefused

logger = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 0.05  # relative drop of the key metric that promotion accepts without --force


def key_metric(manifest: dict) -> tuple[str, float] | None:
    """The bundle's key metric: warm-user NDCG@K of its embeddings on the validation split."""
    try:
        validation = manifest["metrics"]["validation"]
        algo = manifest["config"]["embeddings"]["algorithm"]
        k = validation["k"]
        return f"validation {algo} warm ndcg@{k}", float(validation["results"][algo]["warm"][f"ndcg@{k}"])
    except (KeyError, TypeError):
        return None


def promote_bundle(
    registry: ArtifactRegistry, version: str, *, force: bool = False, tolerance: float = DEFAULT_TOLERANCE
) -> None:
    """Verify ``version`` and make it the serving bundle; raise ``BundleRefused`` saying why not."""
    bundle = load_bundle(registry.path(version))  # raises BundleRefused on any broken component
    current = registry.current()
    if current and current != version and not force:
        try:
            serving = load_bundle(registry.path(current)).manifest
        except (BundleRefused, ValueError):
            serving = None  # the serving bundle is itself broken: nothing to compare against
        new, old = key_metric(bundle.manifest), key_metric(serving) if serving else None
        if new and old and new[0] == old[0] and new[1] < old[1] * (1.0 - tolerance):
            raise BundleRefused(
                f"bundle {version} lowers {new[0]} from {old[1]:.4f} ({current}) to {new[1]:.4f}, more than "
                f"the {tolerance:.0%} tolerance; promote with --force if this is intended"
            )
    registry.set_current(version)
