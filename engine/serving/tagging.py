"""Automatic tagging: the bundle's attribute classifier over a merchant's images (``POST /v1/tag``, ``vitrine tag``).

The classifier is the one the bundle already carries: trained on real catalogue images only, it also judges
generated images and gives grounding its features. An upload is read as the catalogue's photos were read for
training (:func:`features.images.letterbox` to the classifier's size), so a catalogue photo is tagged exactly as
``vitrine evaluate tagging`` measured it. Each attribute's head gives a softmax over that attribute's values;
the k most probable are answered with their probabilities.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from engine.artifacts.bundle import Bundle
from features.attributes import AttributeEncoder
from features.images import letterbox
from models.classifier import AttributeClassifier
from models.pixels import to_float, to_tensor_images

logger = logging.getLogger(__name__)

#: The image formats an upload may be in, and their media types.
IMAGE_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg"}
#: Largest width × height of an upload, checked before its pixels are decoded (a small file can hold a huge image).
MAX_IMAGE_PIXELS = 6000 * 6000
#: File names ``tag_folder`` reads.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class BadImage(ValueError):
    """Bytes this service cannot tag: empty, not a PNG or JPEG, corrupt, or too many pixels."""


def decode_image(data: bytes, size: int, *, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """A PNG or JPEG file's bytes as (size, size, 3) uint8 RGB, letterboxed as catalogue photos are.

    BadImage, saying what to send instead, for anything else."""
    if not data:
        raise BadImage("the image is empty; send a PNG or JPEG file")
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format not in IMAGE_TYPES:
                raise BadImage(f"the image is {im.format or 'of an unknown format'}; send a PNG or JPEG file")
            w, h = im.size
            if w * h > max_pixels:
                raise BadImage(f"the image has {w}x{h} pixels, more than {max_pixels}; send a smaller one")
            return letterbox(im, size)
    except BadImage:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise BadImage(f"the bytes are not a readable PNG or JPEG image ({exc})") from exc


@dataclass(frozen=True)
class Guess:
    """One value of an attribute and the classifier's probability for it."""

    value: str
    probability: float


#: Per attribute, its most probable values, best first.
Tags = dict[str, list[Guess]]


class Tagger:
    """The attribute classifier and the vocabulary its heads predict (``encoder``), answering top-k values."""

    def __init__(self, classifier: AttributeClassifier, encoder: AttributeEncoder) -> None:
        if tuple(classifier.config.cardinalities) != encoder.cardinalities:
            raise ValueError(
                f"classifier heads {classifier.config.cardinalities} != vocabulary {encoder.cardinalities}"
            )
        self.classifier = classifier
        self.encoder = encoder

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> Tagger:
        return cls(bundle.classifier, bundle.encoder)

    @property
    def attributes(self) -> tuple[str, ...]:
        return self.encoder.attributes

    @property
    def image_size(self) -> int:
        return self.classifier.config.image_size

    @torch.inference_mode()
    def probabilities_of_features(self, features: torch.Tensor) -> list[np.ndarray]:
        """Per attribute, (B, n_values) probabilities from (B, feature_dim) raw features (``classifier.embed``)."""
        return [torch.softmax(head(features), dim=1).numpy() for head in self.classifier.heads]

    @torch.inference_mode()
    def probabilities(self, images: np.ndarray, *, batch_size: int = 128) -> list[np.ndarray]:
        """Per attribute, (N, n_values) probabilities for (N, S, S, 3) uint8 images of the classifier's size."""
        if images.ndim != 4 or images.shape[1:3] != (self.image_size, self.image_size):
            raise ValueError(f"expected (N, {self.image_size}, {self.image_size}, C) images; got {images.shape}")
        data = to_tensor_images(images)
        parts: list[list[np.ndarray]] = [[] for _ in self.attributes]
        for start in range(0, len(data), batch_size):
            raw = self.classifier.embed(to_float(data[start : start + batch_size]))
            for a, p in enumerate(self.probabilities_of_features(raw)):
                parts[a].append(p)
        return [
            np.concatenate(p) if p else np.empty((0, n), dtype=np.float32)
            for p, n in zip(parts, self.encoder.cardinalities, strict=True)
        ]

    def top(self, probabilities: Sequence[np.ndarray], row: int, top_k: int) -> Tags:
        """Row ``row``'s top ``top_k`` values per attribute (all of them where an attribute has fewer)."""
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1; got {top_k}")
        out: Tags = {}
        for attr, p in zip(self.attributes, probabilities, strict=True):
            best = np.argsort(-p[row], kind="stable")[:top_k]
            out[attr] = [Guess(self.encoder.values_[attr][int(k)], float(p[row, k])) for k in best]
        return out

    def tag(self, images: np.ndarray, top_k: int = 3) -> list[Tags]:
        """Each of (N, S, S, 3) uint8 images' top ``top_k`` values per attribute."""
        probs = self.probabilities(images)
        return [self.top(probs, row, top_k) for row in range(len(images))]

    def tag_bytes(self, data: bytes, top_k: int = 3) -> Tags:
        """An uploaded PNG or JPEG file's tags; BadImage when it cannot be read."""
        return self.tag(decode_image(data, self.image_size)[None], top_k)[0]


def tag_folder(
    tagger: Tagger,
    folder: Path,
    out: Path,
    *,
    top_k: int = 3,
    batch_size: int = 64,
    show_progress: bool = True,
) -> dict[str, object]:
    """Tag every PNG and JPEG under ``folder`` (recursively, in path order) into the CSV ``out``: one row per
    file, its path relative to ``folder``, then per attribute the best value, its probability and the top
    ``top_k`` as ``value:probability`` separated by ``|``. A file that cannot be read keeps its row, with the
    reason in ``error`` (counted and logged, not fatal). Returns counts and the first failures."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of images")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"{folder} holds no .png, .jpg or .jpeg files")
    attrs = tagger.attributes
    header = ["path", *[c for a in attrs for c in (a, f"{a}_probability", f"{a}_top")], "error"]
    failures: list[str] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    with (
        out.open("w", newline="") as fh,
        tqdm(total=len(paths), desc="tag", unit="img", disable=not show_progress) as bar,
    ):
        writer = csv.writer(fh)
        writer.writerow(header)
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            images: list[np.ndarray] = []
            errors: list[str | None] = []
            for path in chunk:
                try:
                    images.append(decode_image(path.read_bytes(), tagger.image_size))
                    errors.append(None)
                except (BadImage, OSError) as exc:
                    errors.append(str(exc))
                    failures.append(f"{path}: {exc}")
            tags = iter(tagger.tag(np.stack(images), top_k) if images else [])
            for path, error in zip(chunk, errors, strict=True):
                row = [str(path.relative_to(folder))]
                if error is None:
                    guesses = next(tags)
                    for a in attrs:
                        best = guesses[a][0]
                        top = "|".join(f"{g.value}:{g.probability:.4f}" for g in guesses[a])
                        row += [best.value, f"{best.probability:.4f}", top]
                    row.append("")
                else:
                    row += [""] * (3 * len(attrs)) + [error]
                writer.writerow(row)
            bar.update(len(chunk))
    if failures:
        logger.warning("%d of %d images could not be tagged (first: %s)", len(failures), len(paths), failures[0])
    return {
        "images": len(paths),
        "tagged": len(paths) - len(failures),
        "failed": len(failures),
        "failures": failures[:10],
    }
