"""Training configuration: one frozen tree of dataclasses, named presets, and a strict loader.

A config file is JSON whose keys mirror :class:`TrainConfig`; any key this code does not know is an
error (a typo must fail, not quietly add a setting). Values not given keep the preset's.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.recommend.reranker import RerankerConfig
from engine.training.classifier import ClassifierTrainConfig
from engine.training.gan import GANTrainConfig
from engine.training.sr import SRTrainConfig
from engine.training.visual import VisualTrainConfig
from features.weighting import WeightingConfig
from models.embeddings import EmbeddingConfig
from models.io import config_from_dict
from models.retriever import RetrieverConfig


@dataclass(frozen=True, kw_only=True)
class GANArch:
    """The data-independent part of :class:`models.gan.GANConfig` (attributes come from the data)."""

    arch: str = "dcgan"
    z_dim: int = 64
    embed_dim: int = 32
    g_width: int = 16
    d_width: int = 16
    max_width: int = 256
    d_norm: str = "spectral"  # "group" for a private GAN (gan_training.privacy): DP-SGD cannot train spectral norm
    # A cascade (models.cascade): the GAN trains and generates at base_size, and an SR net trained on the
    # catalogue's (base_size, image_size) pairs makes the served image_size. None: no cascade. The upscaler trains
    # for upscaler_steps, or upscaler_seconds if that comes first (steps, not seconds, decide its quality: at
    # 30 s on a busy machine it fell short and the served images lost the detail the classifier reads).
    base_size: int | None = None
    upscaler_steps: int = 4000
    upscaler_seconds: float = 180.0

    def __post_init__(self) -> None:
        if self.base_size is not None and self.base_size not in (16, 32, 64):
            raise ValueError(f"gan.base_size must be 16, 32 or 64 (or null for no cascade); got {self.base_size}")
        if self.upscaler_seconds <= 0 or self.upscaler_steps < 1:
            raise ValueError("gan.upscaler_seconds must be positive and gan.upscaler_steps at least 1")

    def model_fields(self) -> dict[str, Any]:
        """The fields that are :class:`models.gan.GANConfig`'s (the cascade's are not)."""
        cascade = ("base_size", "upscaler_steps", "upscaler_seconds")
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in cascade}


@dataclass(frozen=True, kw_only=True)
class ClassifierArch:
    width: int = 16
    feature_dim: int = 128


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    seed: int = 0
    image_size: int = 64
    min_attribute_count: int = 5  # an attribute value needs this many catalogue images to be generated
    test_days: int = 7  # validation split: the last days of the log
    eval_k: int = 10
    weighting: WeightingConfig = field(default_factory=WeightingConfig)
    embeddings: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    ranker: RerankerConfig = field(default_factory=RerankerConfig)  # what serving ranks shoppers with
    gan: GANArch = field(default_factory=GANArch)
    gan_training: GANTrainConfig = field(default_factory=GANTrainConfig)
    classifier: ClassifierArch = field(default_factory=ClassifierArch)
    classifier_training: ClassifierTrainConfig = field(default_factory=ClassifierTrainConfig)
    retriever: RetrieverConfig = field(default_factory=RetrieverConfig)
    visual: VisualTrainConfig = field(default_factory=VisualTrainConfig)
    sr: SRTrainConfig = field(default_factory=SRTrainConfig)  # served ?size= upscaling and /v1/enhance

    def __post_init__(self) -> None:
        if self.image_size not in (32, 64, 128):
            raise ValueError(f"image_size must be 32, 64 or 128; got {self.image_size}")
        if self.min_attribute_count < 1 or self.test_days < 1 or self.eval_k < 1:
            raise ValueError("min_attribute_count, test_days and eval_k must be positive")
        if self.gan.base_size is not None and self.image_size // self.gan.base_size not in (2, 4):
            raise ValueError(
                f"gan.base_size {self.gan.base_size} must be a half or a quarter of image_size {self.image_size} "
                "(the cascade's upscaler enlarges by 2 or 4)"
            )
        if self.gan_training.privacy.enabled and self.gan.d_norm != "group":
            raise ValueError(
                "gan_training.privacy is on, but DP-SGD cannot train a spectrally normalised discriminator: "
                'set "gan": {"d_norm": "group"} as well'
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, dict[str, Any]] = {
    # Sized for `make demo` on 2 CPU cores. The GAN is a cascade (models.cascade): it learns the catalogue at
    # 32 px, where an 'upsample' step (no transposed convolutions, no checkerboard) of width 24 takes 0.19 s on an
    # idle 2-core machine against 0.36 s for the 64 px DCGAN before it, and an upscaler trained on the catalogue's
    # own images makes the served 64 px. Up to 1,500 steps, stopped at 240 s so that a busy machine still goes from
    # nothing to a serving API in about 10 minutes; `vitrine train` continues from the serving bundle, so each
    # retrain adds its steps to the last one's.
    "demo": {
        "gan": {"arch": "upsample", "g_width": 24, "d_width": 24, "base_size": 32},
        "gan_training": {
            "steps": 1500,
            "batch_size": 64,
            "lr_g": 4e-4,
            "lr_d": 4e-4,
            "checkpoint_every": 0,
            "max_seconds": 240,
        },
        "classifier_training": {"epochs": 6},
        # 75 s for the three SR nets, on 300 drawings at 256 px (about 8 s to draw); `vitrine train sr` trains longer
        "sr": {"seconds": 75, "max_images": 300},
    },
    # The H&M bundle behind the H&M grounding figures (docs/results/2026-11-29-grounding.md): the demo preset
    # with the last day held out for validation, 2 classifier epochs and a GAN of up to 800 steps / 480 s
    # (about 14 min on 2 cores).
    "hm": {
        "test_days": 1,
        "gan_training": {
            "steps": 800,
            "batch_size": 64,
            "lr_g": 4e-4,
            "lr_d": 4e-4,
            "checkpoint_every": 0,
            "max_seconds": 480,
        },
        "classifier_training": {"epochs": 2},
    },
    # A longer run for better images when time allows (about an hour on 2 cores).
    "full": {
        "gan": {"arch": "resnet", "g_width": 32, "d_width": 32},
        "gan_training": {"steps": 6000, "batch_size": 64, "checkpoint_every": 500},
        "classifier_training": {"epochs": 15},
    },
    # For tests: seconds, not minutes. The models are real but barely trained.
    "tiny": {
        "embeddings": {"factors": 16, "iterations": 5},
        "ranker": {"bag": 1, "max_iter": 20, "max_label_windows": 5, "embeddings": {"factors": 8, "iterations": 3}},
        "gan": {
            "g_width": 8,
            "d_width": 8,
            "max_width": 32,
            "z_dim": 16,
            "embed_dim": 8,
            "arch": "upsample",
            "base_size": 32,
            "upscaler_steps": 5,
        },
        "gan_training": {"steps": 4, "batch_size": 8, "log_every": 2},
        "classifier": {"width": 8, "feature_dim": 16},
        "classifier_training": {"epochs": 1, "batch_size": 16},
        "visual": {"hidden": 32, "steps": 60, "batch_size": 64, "calibration_samples": 32},
        "sr": {"width": 8, "blocks": 1, "seconds": 3, "steps": 5, "max_images": 12, "holdout": 2, "drawing_size": 64},
    },
}


def build_config(cls: type, data: dict[str, Any], source: str) -> Any:
    """Build a (possibly nested) config dataclass from a dict, rejecting unknown keys at every level."""
    hints = typing.get_type_hints(cls)
    nested = {f.name for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints.get(f.name))}
    flat = {k: v for k, v in data.items() if k not in nested}
    inner = {k: build_config(hints[k], v, f"{source}.{k}") for k, v in data.items() if k in nested}
    obj = config_from_dict(cls, flat, source=source)
    return dataclasses.replace(obj, **inner) if inner else obj


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in override.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_train_config(preset: str = "demo", path: Path | None = None, overrides: dict | None = None) -> TrainConfig:
    """The preset, then the file's values, then ``overrides`` (e.g. the CLI's --seed)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    data = dict(PRESETS[preset])
    if path is not None:
        try:
            data = _merge(data, json.loads(Path(path).read_text()))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    data = _merge(data, overrides or {})
    # Start from the full default tree so nested sections only need the keys they change.
    full = _merge(TrainConfig().to_dict(), data)
    return build_config(TrainConfig, full, source=str(path or f"preset {preset}"))
