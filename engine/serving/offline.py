"""The serving path without HTTP, for the command line: a registry's bundle as serving loads it, its images of a
new product written to a folder (``vitrine generate``), and a folder of photos tagged (``vitrine tag``)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from engine.artifacts.bundle import load_bundle
from engine.artifacts.registry import ArtifactRegistry
from engine.serving.image_ids import load_or_create_key
from engine.serving.personaliser import Personaliser
from engine.serving.tagging import tag_folder

logger = logging.getLogger(__name__)


def load_personaliser(artifacts: Path, version: str | None = None) -> Personaliser:
    """The bundle ``version`` (default: the serving one) as serving composes it, signing image ids with the
    registry's key file, so that ids written here render on a server of this host that uses it."""
    registry = ArtifactRegistry(artifacts)
    version = version or registry.current()
    if version is None:
        raise ValueError(f"{artifacts} has no serving bundle; pass --version or train one with `vitrine train`")
    return Personaliser(load_bundle(registry.path(version)), key=load_or_create_key(registry.root))


def generate_product_files(
    artifacts: Path,
    values: dict[str, str],
    out: Path,
    *,
    version: str | None = None,
    n: int = 4,
    seed: int = 0,
    neighbours: int = 4,
    in_stock_only: bool = True,
) -> dict[str, Any]:
    """``GET /v1/generate`` into a folder: ``<slot>.png`` per image and ``generate.json`` (the answer, with each
    image's file). Returns that answer."""
    personaliser = load_personaliser(artifacts, version)
    result = personaliser.new_product_images(values, n, seed=seed, neighbours=neighbours, in_stock_only=in_stock_only)
    out.mkdir(parents=True, exist_ok=True)
    answer = asdict(result)
    for image, record in zip(result.images, answer["images"], strict=True):
        path = out / f"{image.slot}.png"
        path.write_bytes(personaliser.render_png(image.image_id))
        record["file"] = path.name
    (out / "generate.json").write_text(json.dumps(answer, indent=2) + "\n")
    return answer


def tag_files(
    artifacts: Path,
    folder: Path,
    out: Path,
    *,
    version: str | None = None,
    top_k: int = 3,
    show_progress: bool = True,
) -> dict[str, Any]:
    """``POST /v1/tag`` over every photo in ``folder``, into the CSV ``out`` (:func:`tagging.tag_folder`)."""
    personaliser = load_personaliser(artifacts, version)
    summary = tag_folder(personaliser.tagger, folder, out, top_k=top_k, show_progress=show_progress)
    return {"bundle_version": personaliser.version, "out": str(out), **summary}
