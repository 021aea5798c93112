"""A visual encoder: a product image (and optionally its attributes) → a vector in the item-embedding space.

DVBPR-style (Kang et al., "Visually-Aware Fashion Recommendation and Design with Generative Image
Models", ICDM 2017): the preference of shopper u for an image x is u · f(x), with u the shopper's
embedding and f a learned map of the image into the space of the item factors. Here f is a small
head on the attribute classifier's penultimate image features,

    f(x[, y]) = W₂ · relu(W₁ · [φ(x); E(y)] + b₁) + b₂,    φ = AttributeClassifier.embed,

so the CNN trunk is shared with grounding (FAISS) and the judge, and only the head is trained on
interactions (``engine.training.visual``): BPR on the shoppers' vectors, anchored by a regression onto
the items' factors (the two objectives of DVBPR and of regressing content onto CF factors). Because
f is differentiable in x, it can also score *generated* images and steer the generator towards a
shopper (preference maximisation, Kang et al. 2017, section IV).

The saved component also holds ``item_vectors``: f of every catalogue image, which gives items without
interactions (cold items) a vector, and a calibration of the score and realism scales that the
Personaliser uses to weigh them against each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from models.io import config_from_dict, config_to_dict, load_state, read_config, read_json, save_module, write_json


@dataclass(frozen=True, kw_only=True)
class VisualEncoderConfig:
    feature_dim: int  # width of the image features φ(x) it reads (the classifier's feature_dim)
    item_dim: int  # width of the item-embedding space it writes (the embedding model's factors)
    hidden: int = 256
    cardinalities: tuple[int, ...] = ()  # attribute cardinalities when attributes are an input; () = image only
    attribute_dim: int = 16

    def __post_init__(self) -> None:
        if min(self.feature_dim, self.item_dim, self.hidden, self.attribute_dim) < 1:
            raise ValueError("feature_dim, item_dim, hidden and attribute_dim must be positive")
        if any(c < 1 for c in self.cardinalities):
            raise ValueError(f"every cardinality must be >= 1; got {self.cardinalities}")

    @property
    def uses_attributes(self) -> bool:
        return bool(self.cardinalities)


@dataclass(frozen=True, kw_only=True)
class VisualCalibration:
    """Scales measured on generated images at training time, so the two terms of the preference objective
    are in comparable units: score / score_std and (D − realism_mean) / realism_std."""

    score_std: float  # std of û · f(G(z, c)) over shoppers (unit vectors û) and generated images
    realism_mean: float  # mean discriminator logit D(G(z, c), c)
    realism_std: float

    def __post_init__(self) -> None:
        if not (self.score_std > 0 and self.realism_std > 0):
            raise ValueError("score_std and realism_std must be positive")


class VisualEncoder(nn.Module):
    """(B, feature_dim) image features [and (B, n_attributes) codes] → (B, item_dim) item-space vectors."""

    def __init__(self, config: VisualEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.attributes = nn.ModuleList(nn.Embedding(n, config.attribute_dim) for n in config.cardinalities)
        width_in = config.feature_dim + config.attribute_dim * len(config.cardinalities)
        self.net = nn.Sequential(
            nn.Linear(width_in, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, config.item_dim),
        )

    def forward(self, features: Tensor, codes: Tensor | None = None) -> Tensor:
        # features: (..., feature_dim); codes: (..., n_attributes) int64, needed iff the config uses attributes.
        # Leading dimensions beyond the batch, e.g. (B, pairs, feature_dim), let training score several items
        # per shopper in one call.
        if self.config.uses_attributes:
            if codes is None:
                raise ValueError("this visual encoder reads attributes too; pass the items' attribute codes")
            features = torch.cat([features, *(emb(codes[..., a]) for a, emb in enumerate(self.attributes))], dim=-1)
        return self.net(features)


@dataclass(kw_only=True)
class VisualComponent:
    """What the bundle's ``visual/`` folder holds: the encoder, its calibration, and f of every catalogue image."""

    encoder: VisualEncoder
    calibration: VisualCalibration
    item_ids: np.ndarray  # (n,) str, catalogue items with an image
    item_vectors: np.ndarray  # (n, item_dim) float32, f of their images
    factors_digest: str  # digest of the item factors f was trained against (see ``factors_digest``)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        save_module(self.encoder, self.encoder.config, directory, "encoder")
        write_json(
            directory / "calibration.json",
            {**config_to_dict(self.calibration), "factors_digest": self.factors_digest},
        )
        np.savez(directory / "item_vectors.npz", item_ids=self.item_ids, item_vectors=self.item_vectors)

    @classmethod
    def load(cls, directory: Path, *, device: str = "cpu") -> VisualComponent:
        directory = Path(directory)
        encoder = load_state(
            VisualEncoder(read_config(VisualEncoderConfig, directory)), directory, "encoder", device=device
        )
        cal = dict(read_json(directory / "calibration.json"))
        digest = str(cal.pop("factors_digest"))
        calibration = config_from_dict(VisualCalibration, cal, source=str(directory / "calibration.json"))
        with np.load(directory / "item_vectors.npz", allow_pickle=False) as f:
            item_ids, item_vectors = f["item_ids"], f["item_vectors"].astype(np.float32)
        return cls(
            encoder=encoder.to(device).eval(),
            calibration=calibration,
            item_ids=item_ids,
            item_vectors=item_vectors,
            factors_digest=digest,
        )


def factors_digest(item_factors: np.ndarray) -> str:
    """A short digest of item factors: a visual encoder only fits the embedding space it was trained on."""
    import hashlib

    return hashlib.blake2b(np.ascontiguousarray(item_factors, dtype=np.float32).tobytes(), digest_size=8).hexdigest()
