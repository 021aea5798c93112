"""Catalogue images as uint8 arrays: load, letterbox to a square, batch."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


def letterbox(im: Image.Image, size: int, *, background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """An opened image as (size, size, 3) uint8 RGB, keeping its aspect by padding with ``background``.

    Product shots are rarely square (H&M's are 2:3, Myntra's 3:4); stretching them would change the
    garment's shape, so the longer side is scaled to ``size`` and the shorter one padded. Transparent pixels
    show the background, as a product shot on it would (a bare conversion to RGB would show whatever colour
    the transparent pixels happen to hold, often black).
    """
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, (*background, 255))
        flat.alpha_composite(rgba)
        im = flat.convert("RGB")
    else:
        im = im.convert("RGB")
    w, h = im.size
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    im = im.resize((nw, nh), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (size, size), background)
    canvas.paste(im, ((size - nw) // 2, (size - nh) // 2))
    return np.asarray(canvas, dtype=np.uint8)


def load_image(source: Path | BinaryIO, size: int, *, background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """Read an image file (a path, or an open binary file) as (size, size, 3) uint8 RGB (see :func:`letterbox`)."""
    with Image.open(source) as opened:
        return letterbox(opened, size, background=background)


def load_images(
    paths: Sequence[Path | None], size: int, *, show_progress: bool = True, desc: str = "images"
) -> tuple[np.ndarray, np.ndarray]:
    """Load many images; return ``(images (N, size, size, 3) uint8, ok (N,) bool)``.

    A missing or unreadable file leaves a blank image and ``ok=False`` at its place (counted and logged),
    so one bad file does not stop a catalogue from loading.
    """
    out = np.full((len(paths), size, size, 3), 255, dtype=np.uint8)
    ok = np.zeros(len(paths), dtype=bool)
    failures: list[str] = []
    for k, path in enumerate(tqdm(paths, desc=desc, disable=not show_progress, unit="img")):
        if path is None:
            continue
        try:
            out[k] = load_image(Path(path), size)
            ok[k] = True
        except (OSError, ValueError) as exc:
            failures.append(f"{path}: {exc}")
    if failures:
        logger.warning("%d images could not be read (first: %s)", len(failures), failures[0])
    return out, ok
