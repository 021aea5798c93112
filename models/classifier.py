"""An attribute classifier for catalogue images: one CNN trunk, one head per attribute.

It serves two purposes: as an independent judge of generated images (does this picture show the
class and colour it was asked for?) and as the image feature space in which generated images are
linked to their nearest real catalogue items. It is trained on real catalogue images only
(``engine.training.classifier``), never on generated ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from models.io import load_state, read_config, save_module


@dataclass(frozen=True, kw_only=True)
class ClassifierConfig:
    attribute_names: tuple[str, ...]
    cardinalities: tuple[int, ...]
    image_size: int = 64
    channels: int = 3
    width: int = 16  # channels of the first stage; doubles per stage
    feature_dim: int = 128

    def __post_init__(self) -> None:
        if len(self.attribute_names) != len(self.cardinalities) or not self.attribute_names:
            raise ValueError("attribute_names and cardinalities must be non-empty and of equal length")
        if self.image_size not in (28, 32, 64, 128) or self.channels not in (1, 3):
            raise ValueError(f"unsupported image {self.channels}x{self.image_size}x{self.image_size}")
        if self.width < 4 or self.feature_dim < 8:
            raise ValueError("width must be >= 4 and feature_dim >= 8")


def _conv(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def _stage(c_in: int, c_out: int, *, convs: int = 2) -> nn.Sequential:
    layers = _conv(c_in, c_out) + [m for _ in range(convs - 1) for m in _conv(c_out, c_out)]
    return nn.Sequential(*layers, nn.MaxPool2d(2))


class AttributeClassifier(nn.Module):
    """(B, C, H, W) images in [-1, 1] → per-attribute logits, and an L2-normalised feature vector."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        w = config.width
        self.trunk = nn.Sequential(
            # one cheap convolution at full resolution, then two per stage (a small VGG)
            _stage(config.channels, w, convs=1),
            _stage(w, 2 * w),
            _stage(2 * w, 4 * w),
            _stage(4 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.project = nn.Linear(4 * w, config.feature_dim)
        self.heads = nn.ModuleList(nn.Linear(config.feature_dim, n) for n in config.cardinalities)

    def embed(self, x: Tensor) -> Tensor:  # (B, feature_dim), before normalisation
        return F.relu(self.project(self.trunk(x)))

    def forward(self, x: Tensor) -> list[Tensor]:
        h = self.embed(x)
        return [head(h) for head in self.heads]

    def features(self, x: Tensor) -> Tensor:
        """Unit-length features (B, feature_dim): inner product = cosine similarity, for FAISS."""
        return F.normalize(self.embed(x), dim=1)

    def save(self, directory: Path) -> None:
        """Write ``config.json`` and ``classifier.safetensors``."""
        save_module(self, self.config, directory, "classifier")

    @classmethod
    def load(cls, directory: Path, *, device: str = "cpu") -> AttributeClassifier:
        """Rebuild the classifier from its saved config and weights, in eval mode."""
        model = cls(read_config(ClassifierConfig, directory))
        return load_state(model, directory, "classifier", device=device).to(device).eval()
