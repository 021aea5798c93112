"""The bundle as serving loads it, and its classifier as the judge of generated images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engine.artifacts.bundle import Bundle, load_bundle
from engine.artifacts.registry import ArtifactRegistry
from engine.training.classifier import predict


def judge(bundle: Bundle, images: torch.Tensor) -> np.ndarray:  # images: (N, C, H, W) in [-1, 1], or uint8
    """(N, n_attributes) codes predicted by the bundle's classifier."""
    return np.stack(predict(bundle.classifier, images), axis=1)


def served_bundle(artifacts: Path, version: str | None = None) -> tuple[str, Bundle]:
    """(version, bundle): the bundle ``version`` under ``artifacts``, or the one that serves (the registry's
    pointer) when ``version`` is None, loaded and checked as serving loads it."""
    registry = ArtifactRegistry(artifacts)
    version = version or registry.current()
    if version is None:
        raise ValueError(f"no serving bundle under {artifacts}; pass --version or promote one")
    return version, load_bundle(registry.path(version))
