"""Labelled image collections for generator training and evaluation (no shopper logs needed).

Readers return an :class:`ImageDataset`: uint8 images, their attribute labels as strings, and a fixed
train/test split, so the generator harness treats Fashion-MNIST, Myntra and H&M alike.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.images import load_images
from features.schema import StoreData

logger = logging.getLogger(__name__)

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


@dataclass(frozen=True, kw_only=True)
class ImageDataset:
    name: str
    images: np.ndarray  # (N, S, S, C) uint8
    labels: pd.DataFrame  # one str column per attribute, N rows
    attributes: tuple[str, ...]
    is_test: np.ndarray  # (N,) bool: the held-out split
    rule: str = ""  # how classes/values were selected, for reports

    def __post_init__(self) -> None:
        if not (len(self.images) == len(self.labels) == len(self.is_test)):
            raise ValueError("images, labels and is_test must have the same length")
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be (N, S, S, C) uint8; got {self.images.shape} {self.images.dtype}")

    def subset(self, mask: np.ndarray) -> ImageDataset:
        return ImageDataset(
            name=self.name,
            images=self.images[mask],
            labels=self.labels[mask].reset_index(drop=True),
            attributes=self.attributes,
            is_test=self.is_test[mask],
            rule=self.rule,
        )


def _read_idx(path: Path, magic: int) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    got, n = struct.unpack(">II", data[:8])
    if got != magic:
        raise ValueError(f"{path}: IDX magic {got}, expected {magic}; is this the right file?")
    if magic == 2051:
        rows, cols = struct.unpack(">II", data[8:16])
        arr = np.frombuffer(data, dtype=np.uint8, offset=16)
        if arr.size != n * rows * cols:
            raise ValueError(f"{path}: {arr.size} pixels for {n} images of {rows}x{cols}; the file is truncated")
        return arr.reshape(n, rows, cols)
    arr = np.frombuffer(data, dtype=np.uint8, offset=8)
    if arr.size != n:
        raise ValueError(f"{path}: {arr.size} labels, header says {n}; the file is truncated")
    return arr


def read_fashion_mnist(path: Path, *, size: int = 32) -> ImageDataset:
    """The four official IDX files; images padded with black from 28x28 to ``size`` (32 by default)."""
    path = Path(path)
    parts = []
    for split, prefix in (("train", "train"), ("test", "t10k")):
        img_path, lab_path = path / f"{prefix}-images-idx3-ubyte.gz", path / f"{prefix}-labels-idx1-ubyte.gz"
        if not img_path.is_file() or not lab_path.is_file():
            raise FileNotFoundError(f"{path} lacks {img_path.name} / {lab_path.name} (Fashion-MNIST IDX files)")
        images, labels = _read_idx(img_path, 2051), _read_idx(lab_path, 2049)
        if len(images) != len(labels):
            raise ValueError(f"{split}: {len(images)} images but {len(labels)} labels")
        parts.append((images, labels, split == "test"))
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    is_test = np.concatenate([np.full(len(p[0]), p[2]) for p in parts])
    pad = (size - 28) // 2
    if pad < 0:
        raise ValueError("size must be at least 28")
    images = np.pad(images, ((0, 0), (pad, size - 28 - pad), (pad, size - 28 - pad)))[..., None]
    names = np.asarray(FASHION_MNIST_CLASSES)[labels]
    return ImageDataset(
        name="fashion_mnist",
        images=images,
        labels=pd.DataFrame({"class": names}),
        attributes=("class",),
        is_test=is_test,
        rule="all 10 classes; official train/test split",
    )


def hash_split(ids: pd.Series, test_share: float, salt: str) -> np.ndarray:
    """A reproducible split by id: an id is test when sha256(salt + id) falls in the first ``test_share``."""
    cut = int(test_share * 1000)
    return np.array([int(hashlib.sha256(f"{salt}{i}".encode()).hexdigest(), 16) % 1000 < cut for i in ids], dtype=bool)


def _frequent(values: pd.Series, min_count: int) -> set[str]:
    counts = values.value_counts()
    return set(counts[counts >= min_count].index)


def read_myntra(
    path: Path,
    *,
    size: int = 64,
    min_class: int = 300,
    min_colour: int = 300,
    test_share: float = 0.2,
    max_images: int | None = None,
    show_progress: bool = True,
) -> ImageDataset:
    """Myntra "Fashion Product Images (Small)": ``styles.csv`` + ``images/<id>.jpg``.

    Rule: keep the articleTypes and the baseColours that each have at least ``min_class`` /
    ``min_colour`` images (counted on rows with an image), then the images in both. Images are
    letterboxed on white to ``size``. The test split is 20% of ids by a salted hash.
    """
    path = Path(path)
    styles_path = path / "styles.csv"
    if not styles_path.is_file():
        raise FileNotFoundError(f"{path} lacks styles.csv (the Myntra Fashion Product Images layout)")
    styles = pd.read_csv(styles_path, dtype=str, keep_default_na=False)
    styles = styles[[c for c in ("id", "articleType", "baseColour") if c in styles.columns]]
    exists = styles["id"].map(lambda i: (path / "images" / f"{i}.jpg").is_file())
    styles = styles[exists & (styles["articleType"] != "") & (styles["baseColour"] != "")]
    classes = _frequent(styles["articleType"], min_class)
    colours = _frequent(styles["baseColour"], min_colour)
    keep = styles[styles["articleType"].isin(classes) & styles["baseColour"].isin(colours)].reset_index(drop=True)
    if max_images is not None and len(keep) > max_images:
        keep = keep.sample(max_images, random_state=0).reset_index(drop=True)
    images, ok = load_images(
        [path / "images" / f"{i}.jpg" for i in keep["id"]],
        size,
        show_progress=show_progress,
        desc="myntra images",
    )
    keep = keep[ok].reset_index(drop=True)
    rule = (
        f"articleType with >= {min_class} images ({len(classes)} kept), baseColour with >= {min_colour} "
        f"images ({len(colours)} kept); {len(keep)} images"
    )
    logger.info("Myntra: %s", rule)
    return ImageDataset(
        name="myntra",
        images=images[ok],
        labels=pd.DataFrame({"class": keep["articleType"].to_numpy(), "colour": keep["baseColour"].to_numpy()}),
        attributes=("class", "colour"),
        is_test=hash_split(keep["id"], test_share, "vitrine-myntra"),
        rule=rule,
    )


def store_images(
    store: StoreData,
    *,
    size: int = 64,
    attributes: tuple[str, ...] | None = None,
    min_count: int = 100,
    test_share: float = 0.2,
    show_progress: bool = True,
) -> ImageDataset:
    """The catalogue images of a store (e.g. H&M) labelled by its attributes.

    Rule: keep the values of each attribute with at least ``min_count`` images, then the items whose
    every attribute value is kept. H&M's 96x144 images are letterboxed to ``size`` (aspect kept).
    """
    attributes = attributes or store.attributes
    cat = store.catalogue[store.catalogue["image"] != ""]
    kept = {a: _frequent(cat[a], min_count) for a in attributes}
    mask = np.ones(len(cat), dtype=bool)
    for a in attributes:
        mask &= cat[a].isin(kept[a]).to_numpy()
    cat = cat[mask].reset_index(drop=True)
    images, ok = load_images(
        [store.image_root / p for p in cat["image"]],
        size,
        show_progress=show_progress,
        desc=f"{store.name} images",
    )
    cat = cat[ok].reset_index(drop=True)
    rule = (
        ", ".join(f"{a} with >= {min_count} images ({len(kept[a])} kept)" for a in attributes) + f"; {len(cat)} images"
    )
    return ImageDataset(
        name=store.name,
        images=images[ok],
        labels=cat[list(attributes)].reset_index(drop=True),
        attributes=tuple(attributes),
        is_test=hash_split(cat["item_id"], test_share, f"vitrine-{store.name}"),
        rule=rule,
    )
