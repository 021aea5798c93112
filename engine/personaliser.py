"""The Personaliser: from a shopper to a set of generated product images, each linked to real items.

For a shopper with a vector u (stored, or folded in from their events):
1. condition distribution — the shopper's top-``top_items`` items by u·v_i, weighted by rank
   (w_r = 1 / log2(r + 1), the DCG discount), summed per (class, colour, pattern) condition:
   p(c | u) ∝ Σ_{i in top, cond(i) = c} w_rank(i);
2. n distinct conditions drawn without replacement from p(c | u) (Gumbel-top-k, Kool et al. 2019);
3. one image per condition from the EMA generator, its noise seeded by (user, bundle version, slot),
   so the same request gives the same images;
4. for each image, the k nearest real catalogue items by image features (FAISS).

Cold start (a shopper the model has never seen and who brings no events): the conditions are drawn
from catalogue popularity, p(c) ∝ Σ_{cond(i) = c} popularity(i), with the same seeding, so a new
shopper gets popular, varied products instead of an error.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine.bundle import Bundle
from engine.sessions import SessionEvent

logger = logging.getLogger(__name__)

IMAGE_ID_RE = re.compile(r"^(?P<version>\d{8}T\d{6}Z-[0-9a-f]{6})_(?P<codes>\d+(?:\.\d+)*)_(?P<seed>[0-9a-f]{16})$")


@dataclass(frozen=True, kw_only=True)
class PersonaliserConfig:
    top_items: int = 100
    max_set_size: int = 32
    max_neighbours: int = 20
    cache_size: int = 4096

    def __post_init__(self) -> None:
        if min(self.top_items, self.max_set_size, self.max_neighbours, self.cache_size) < 1:
            raise ValueError("every PersonaliserConfig value must be positive")


@dataclass(frozen=True, kw_only=True)
class NearestItem:
    item_id: str
    similarity: float
    attributes: dict[str, str]
    price: float | None


@dataclass(frozen=True, kw_only=True)
class GeneratedImage:
    image_id: str
    slot: int
    condition: dict[str, str]
    score: float  # p(condition | shopper)
    nearest: list[NearestItem]


@dataclass(frozen=True, kw_only=True)
class ImageSet:
    user_id: str
    strategy: str  # "personalised" or "cold_start"
    bundle_version: str
    images: list[GeneratedImage]


class UnknownImage(LookupError):
    """An image id that this bundle cannot render (malformed, or from another bundle)."""


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from the parts' text: the same parts give the same seed in every process."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & ((1 << 63) - 1)


class _PngCache:
    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: str, value: bytes) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)


def to_png(image: np.ndarray) -> bytes:
    """(H, W, C) uint8 → PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(buf, format="PNG")
    return buf.getvalue()


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] → (B, H, W, C) uint8."""
    return ((images.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class Personaliser:
    def __init__(self, bundle: Bundle, config: PersonaliserConfig | None = None) -> None:
        self.bundle = bundle
        self.config = config or PersonaliserConfig()
        self._cache = _PngCache(self.config.cache_size)
        # Distinct conditions of the catalogue, and the condition of each embedding item (-1: none).
        self.conditions, cond_of_item = np.unique(bundle.codes, axis=0, return_inverse=True)
        cond_of_item = cond_of_item.ravel()
        self._cond_of_embedding_item = np.full(len(bundle.embeddings.item_ids), -1, dtype=np.int64)
        rows = bundle.embedding_rows
        self._cond_of_embedding_item[rows[rows >= 0]] = cond_of_item[rows >= 0]
        self._no_condition = np.flatnonzero(self._cond_of_embedding_item < 0)
        popularity = bundle.catalogue["popularity"].to_numpy(dtype=np.float64)
        pop = np.bincount(cond_of_item, weights=popularity, minlength=len(self.conditions))
        self._popular = (pop + 1e-9) / (pop + 1e-9).sum()
        self._catalogue_rows = {item: k for k, item in enumerate(bundle.catalogue["item_id"])}
        self._attributes = bundle.catalogue[list(bundle.attributes)].to_numpy(dtype=str)
        self._prices = bundle.catalogue["price"].to_numpy(dtype=np.float64)
        self._z_dim = bundle.generator.config.z_dim

    @property
    def version(self) -> str:
        return self.bundle.version

    # ---- who is the shopper -------------------------------------------------------------------------
    def user_vector(self, user_id: str) -> np.ndarray | None:
        """The stored vector of a shopper seen in training, or None."""
        row = self.bundle.embeddings.user_index(user_id)
        return None if row < 0 else self.bundle.embeddings.user_factors[row]

    def session_vector(self, user_id: str, events: list[SessionEvent]) -> np.ndarray | None:
        """Fold the session's events into the shopper's history (or into nothing, for a new shopper).

        One ALS half-step (``EmbeddingModel.fold_in``) on the shopper's weighted training history plus the
        session's events weighted by type (the bundle's weighting, no decay: they are happening now).
        Items the embedding model does not know are ignored; None when nothing is left.
        """
        emb = self.bundle.embeddings
        weights = self.bundle.weighting.type_weights
        rows = emb.item_indices([e.item_id for e in events])
        strength = np.array([weights.get(e.event_type, 0.0) for e in events], dtype=np.float64)
        keep = rows >= 0
        rows, strength = rows[keep], strength[keep]
        urow = emb.user_index(user_id)
        if urow >= 0:
            hist = self.bundle.history[urow]
            rows = np.concatenate([hist.indices.astype(np.int64), rows])
            strength = np.concatenate([hist.data.astype(np.float64), strength])
        if rows.size == 0:
            return self.user_vector(user_id)
        uniq, inverse = np.unique(rows, return_inverse=True)
        return emb.fold_in(uniq, np.bincount(inverse.ravel(), weights=strength))

    def condition_distribution(self, user_vector: np.ndarray | None) -> np.ndarray:
        """p(condition | shopper) over ``self.conditions``; popularity when there is no vector."""
        if user_vector is None:
            return self._popular
        k = min(self.config.top_items, len(self._cond_of_embedding_item) - len(self._no_condition))
        top, _ = self.bundle.embeddings.recommend(user_vector, k, exclude=self._no_condition)
        weights = 1.0 / np.log2(np.arange(2, len(top) + 2))
        p = np.bincount(self._cond_of_embedding_item[top], weights=weights, minlength=len(self.conditions))
        return p / p.sum()

    # ---- images ---------------------------------------------------------------------------------------
    def choose_conditions(self, p: np.ndarray, n: int, seed: int) -> np.ndarray:
        """n condition indices: distinct while p has enough support (Gumbel-top-k), then the most likely again."""
        rng = np.random.default_rng(seed)
        with np.errstate(divide="ignore"):
            keys = np.log(p) + rng.gumbel(size=len(p))
        order = np.argsort(-keys, kind="stable")
        support = int((p > 0).sum())
        chosen = list(order[: min(n, support)])
        by_p = np.argsort(-p, kind="stable")[:support]
        while len(chosen) < n:
            chosen.append(by_p[(len(chosen) - support) % support])
        return np.asarray(chosen, dtype=np.int64)

    def image_id(self, codes: np.ndarray, seed: int) -> str:
        return f"{self.version}_{'.'.join(str(int(c)) for c in codes)}_{seed:016x}"

    def parse_image_id(self, image_id: str) -> tuple[np.ndarray, int]:
        m = IMAGE_ID_RE.match(image_id)
        if not m:
            raise UnknownImage(f"{image_id!r} is not an image id of the form <bundle>_<codes>_<seed>")
        if m["version"] != self.version:
            raise UnknownImage(
                f"image {image_id} was made by bundle {m['version']}, which no longer serves "
                f"(now {self.version}); request a new image set"
            )
        codes = np.array([int(c) for c in m["codes"].split(".")], dtype=np.int64)
        card = self.bundle.encoder.cardinalities
        if len(codes) != len(card) or (codes < 0).any() or (codes >= np.asarray(card)).any():
            raise UnknownImage(f"image {image_id} names a condition this bundle does not have")
        return codes, int(m["seed"], 16)

    @torch.inference_mode()
    def generate(self, codes: np.ndarray, seeds: list[int]) -> torch.Tensor:
        """(n, n_attr) codes and n seeds → (n, C, H, W) images in [-1, 1]; each depends only on its own pair."""
        z = torch.stack([torch.randn(self._z_dim, generator=torch.Generator().manual_seed(s)) for s in seeds])
        return self.bundle.generator(z, torch.as_tensor(np.ascontiguousarray(codes), dtype=torch.long))

    def render_png(self, image_id: str) -> bytes:
        """The PNG of an image id (from the cache, or regenerated: the id holds everything needed)."""
        cached = self._cache.get(image_id)
        if cached is not None:
            return cached
        codes, seed = self.parse_image_id(image_id)
        png = to_png(to_uint8(self.generate(codes[None, :], [seed]))[0])
        self._cache.put(image_id, png)
        return png

    @torch.inference_mode()
    def nearest_items(self, images: torch.Tensor, k: int) -> list[list[NearestItem]]:
        feats = self.bundle.classifier.features(images).numpy()
        sims, rows = self.bundle.retriever.search(feats, k)
        out = []
        for srow, irow in zip(sims, rows, strict=True):
            items = []
            for s, r in zip(srow, irow, strict=True):
                if r < 0:
                    continue
                item_id = str(self.bundle.retriever.item_ids[r])
                c = self._catalogue_rows[item_id]
                price = self._prices[c]
                items.append(
                    NearestItem(
                        item_id=item_id,
                        similarity=float(s),
                        attributes=dict(zip(self.bundle.attributes, self._attributes[c], strict=True)),
                        price=None if np.isnan(price) else float(price),
                    )
                )
            out.append(items)
        return out

    def image_set(
        self, user_id: str, n: int = 8, *, neighbours: int = 4, session: list[SessionEvent] | None = None
    ) -> ImageSet:
        """n generated images for a shopper; ``session`` events (if any) are folded in first.

        Strategy: ``session`` when session events shaped the vector, ``personalised`` for a stored shopper,
        ``cold_start`` otherwise. The condition draw is seeded by the shopper and the session's length, so
        the set is stable between events and changes as soon as a new event arrives.
        """
        if not 1 <= n <= self.config.max_set_size:
            raise ValueError(f"n must be between 1 and {self.config.max_set_size}; got {n}")
        if not 1 <= neighbours <= self.config.max_neighbours:
            raise ValueError(f"neighbours must be between 1 and {self.config.max_neighbours}; got {neighbours}")
        if session:
            vector = self.session_vector(user_id, session)
            known = self.bundle.embeddings.item_indices([e.item_id for e in session]) >= 0
            strategy = "session" if known.any() else ("personalised" if vector is not None else "cold_start")
        else:
            vector = self.user_vector(user_id)
            strategy = "personalised" if vector is not None else "cold_start"
        p = self.condition_distribution(vector)
        chosen = self.choose_conditions(p, n, stable_seed(user_id, self.version, "conditions", len(session or ())))
        codes = self.conditions[chosen]
        seeds = [stable_seed(user_id, self.version, slot) for slot in range(n)]
        images = self.generate(codes, seeds)
        nearest = self.nearest_items(images, neighbours)
        pixels = to_uint8(images)
        out = []
        for slot in range(n):
            image_id = self.image_id(codes[slot], seeds[slot])
            self._cache.put(image_id, to_png(pixels[slot]))
            out.append(
                GeneratedImage(
                    image_id=image_id,
                    slot=slot,
                    condition=self.bundle.encoder.decode(codes[slot]),
                    score=float(p[chosen[slot]]),
                    nearest=nearest[slot],
                )
            )
        return ImageSet(user_id=user_id, strategy=strategy, bundle_version=self.version, images=out)

    def item_image_path(self, item_id: str) -> Path | None:
        """The catalogue photo of an item, if the bundle knows where its images live and the file exists."""
        row = self._catalogue_rows.get(item_id)
        root = self.bundle.image_root
        if row is None or root is None or not self.bundle.catalogue["has_image"].iat[row]:
            return None
        path = root / str(self.bundle.catalogue["image"].iat[row])
        return path if path.is_file() else None

    def item(self, item_id: str) -> dict | None:
        row = self._catalogue_rows.get(item_id)
        if row is None:
            return None
        price = self._prices[row]
        return {
            "item_id": item_id,
            "attributes": dict(zip(self.bundle.attributes, self._attributes[row], strict=True)),
            "price": None if np.isnan(price) else float(price),
            "has_image": bool(self.bundle.catalogue["has_image"].iat[row]),
            "popularity": float(self.bundle.catalogue["popularity"].iat[row]),
        }
