"""High-resolution images for super-resolution and restoration: where they come from, and the held-out split.

Super-resolution learns from the shop's own catalogue photos at their native resolution (H&M's are 96×144,
Myntra's 60×80), since serving upscales images of that catalogue. The demo store's catalogue is drawn: its
drawings can be rendered at any size (:func:`engine.world.art.draw_item`), so its high-resolution images are
drawings of its own classes, colours and patterns at ``drawing_size`` (256 px, the largest size served).

The same images serve `vitrine train sr` and `vitrine evaluate sr|restore`: a photo is held out when a salted
hash of its id falls in the first ``TEST_SHARE`` (:func:`features.image_datasets.hash_split`); demo drawings are
held out by being drawn from another random stream than the training ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from engine.world.art import CLASSES, COLOURS, PATTERNS, draw_item
from engine.world.demo_store import STORE_NAME
from features.image_datasets import hash_split
from features.schema import StoreData

logger = logging.getLogger(__name__)

DATASETS = ("demo", "hm", "myntra", "folder")
TEST_SHARE = 0.1
SPLIT_SALT = "vitrine-sr"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# Streams of the drawings: training draws from (seed, 0), evaluation from (seed, 1), so they never coincide.
_TRAIN_STREAM, _TEST_STREAM = 0, 1


def read_rgb(path: Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB at its own size (transparency over white)."""
    with Image.open(path) as opened:
        if opened.mode in ("RGBA", "LA", "P"):
            rgba = opened.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return np.asarray(Image.alpha_composite(canvas, rgba).convert("RGB"))
        return np.asarray(opened.convert("RGB"))


def read_many(paths: list[Path], *, show_progress: bool, desc: str) -> list[np.ndarray]:
    """The readable images among ``paths``; unreadable ones are counted and logged, not fatal."""
    images, failures = [], []
    for path in tqdm(paths, desc=desc, unit="img", disable=not show_progress):
        try:
            images.append(read_rgb(path))
        except (OSError, ValueError) as exc:
            failures.append(f"{path}: {exc}")
    if failures:
        logger.warning("%d images could not be read (first: %s)", len(failures), failures[0])
    return images


def draw_many(
    rows: pd.DataFrame | None, n: int, size: int, seed: int, *, stream: int, show_progress: bool
) -> list[np.ndarray]:
    """``n`` demo drawings at ``size`` px: classes, colours and patterns drawn from the catalogue ``rows``
    (uniformly from the demo world's when None), shapes from the stream (seed, ``stream``)."""
    rng = np.random.default_rng([seed, stream])
    if rows is None:
        kinds = [(CLASSES[i], list(COLOURS)[j], PATTERNS[k]) for i, j, k in rng.integers(0, (8, 10, 4), size=(n, 3))]
    else:
        picked = rows.iloc[rng.integers(0, len(rows), size=n)]
        kinds = list(zip(picked["class"], picked["colour"], picked["pattern"], strict=True))
    return [
        draw_item(kind, colour, pattern, rng, size)
        for kind, colour, pattern in tqdm(kinds, desc=f"drawing at {size} px", unit="img", disable=not show_progress)
    ]


def _sample(paths: list[Path], max_images: int | None, seed: int) -> list[Path]:
    if max_images is None or len(paths) <= max_images:
        return paths
    keep = np.sort(np.random.default_rng(seed).choice(len(paths), size=max_images, replace=False))
    return [paths[k] for k in keep]


@dataclass(frozen=True, kw_only=True)
class CatalogueImages:
    """Where a shop's catalogue photos are: its name (the demo store's is drawn), items and image root."""

    name: str
    items: pd.DataFrame  # with an ``image`` column of paths under ``image_root`` ("" for none)
    image_root: Path | None

    @classmethod
    def of(cls, store: StoreData) -> CatalogueImages:
        return cls(name=store.name, items=store.catalogue, image_root=store.image_root)

    @property
    def drawn(self) -> bool:
        """Whether the catalogue is the demo world's drawings (which can be drawn at any size)."""
        return self.name == STORE_NAME and {"class", "colour", "pattern"} <= set(self.items.columns)


def catalogue_hr_images(
    catalogue: CatalogueImages, source: str, *, max_images: int, drawing_size: int, seed: int, show_progress: bool
) -> tuple[list[np.ndarray], str]:
    """A shop's high-resolution images for SR training and the source used: ``catalogue`` (its photos at
    native size, at most ``max_images``, sampled by ``seed``) or ``drawings``; ``auto`` picks drawings for the
    demo store."""
    if source == "auto":
        source = "drawings" if catalogue.drawn else "catalogue"
    if source == "drawings":
        if not catalogue.drawn:
            raise ValueError(f"{catalogue.name} is not the demo store: its images cannot be drawn; use 'catalogue'")
        drawn = draw_many(
            catalogue.items, max_images, drawing_size, seed, stream=_TRAIN_STREAM, show_progress=show_progress
        )
        return drawn, source
    if source != "catalogue":
        raise ValueError(f"unknown high-resolution source {source!r}; choose auto, catalogue or drawings")
    root = catalogue.image_root
    if root is None:
        raise ValueError(f"{catalogue.name}: the catalogue has no images to learn super-resolution from")
    paths = [root / p for p in catalogue.items["image"] if p]
    images = read_many(_sample(paths, max_images, seed), show_progress=show_progress, desc="catalogue photos")
    if not images:
        raise ValueError(f"{catalogue.name}: none of the catalogue's images could be read from {root}")
    return images, source


def _files(path: Path, dataset: str) -> list[Path]:
    path = Path(path)
    if dataset in ("hm", "myntra"):
        root = path / "images"
        if not root.is_dir():
            layout = "images/<id>.jpg and styles.csv" if dataset == "myntra" else "images/<prefix>/<article_id>.jpg"
            raise FileNotFoundError(f"{path} lacks images/ (the {dataset} layout: {layout})")
        return sorted(p for p in root.rglob("*.jpg"))
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a folder of images")
    return sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def dataset_images(
    dataset: str,
    path: Path | None,
    split: str,
    *,
    max_images: int | None,
    seed: int = 0,
    drawing_size: int = 256,
    show_progress: bool = True,
) -> list[np.ndarray]:
    """A labelled collection's high-resolution images of ``split`` (``train`` or ``test``).

    ``demo``: drawings at ``drawing_size`` px (``path`` unused; ``max_images`` of them, default 200);
    ``hm`` / ``myntra``: the photos under ``path``/images, split by a salted hash of the file name;
    ``folder``: every image in ``path``, whatever the split.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test; got {split!r}")
    if dataset == "demo":
        stream = _TRAIN_STREAM if split == "train" else _TEST_STREAM
        return draw_many(None, max_images or 200, drawing_size, seed, stream=stream, show_progress=show_progress)
    if path is None:
        raise ValueError(f"the {dataset} dataset needs --data (its folder)")
    files = _files(path, dataset)
    if dataset != "folder":
        test = hash_split(pd.Series([p.stem for p in files]), TEST_SHARE, SPLIT_SALT)
        files = [p for p, t in zip(files, test, strict=True) if t == (split == "test")]
    if not files:
        raise FileNotFoundError(f"no {split} images found under {path}")
    return read_many(_sample(files, max_images, seed), show_progress=show_progress, desc=f"{dataset} {split} images")
