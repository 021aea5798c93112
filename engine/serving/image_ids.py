"""Image ids: everything a worker needs to regenerate a generated image, and the seeds behind them.

An id is ``<bundle>_<codes>_<seed>`` (condition codes joined by dots, the noise seed in hex), plus ``_<z>`` for
a latent code optimised for a shopper (float16, base64url), so any worker holding the same bundle renders the
same pixels.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence

import numpy as np

from engine.serving.types import UnknownImage

IMAGE_ID_RE = re.compile(
    r"^(?P<version>\d{8}T\d{6}Z-[0-9a-f]{6})_(?P<codes>\d+(?:\.\d+)*)_(?P<seed>[0-9a-f]{16})(?:_(?P<z>[A-Za-z0-9_-]+))?$"
)


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from the parts' text: the same parts give the same seed in every process."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & ((1 << 63) - 1)


class ImageIdCodec:
    """Writes and reads the image ids of one bundle (its version, condition cardinalities and z size)."""

    def __init__(self, version: str, cardinalities: Sequence[int], z_dim: int) -> None:
        self.version = version
        self.cardinalities = np.asarray(cardinalities, dtype=np.int64)
        self.z_dim = z_dim

    def encode(self, codes: np.ndarray, seed: int, z: np.ndarray | None = None) -> str:
        """``<bundle>_<codes>_<seed>``, plus ``_<z>`` (float16, base64url) for an optimised latent code."""
        base = f"{self.version}_{'.'.join(str(int(c)) for c in codes)}_{seed:016x}"
        if z is None:
            return base
        raw = np.asarray(z, dtype="<f2").tobytes()
        return f"{base}_{base64.urlsafe_b64encode(raw).decode().rstrip('=')}"

    def decode(self, image_id: str) -> tuple[np.ndarray, int, np.ndarray | None]:
        """(condition codes, noise seed, optimised latent code or None); UnknownImage says what is wrong."""
        m = IMAGE_ID_RE.match(image_id)
        if not m:
            raise UnknownImage(f"{image_id!r} is not an image id of the form <bundle>_<codes>_<seed>")
        if m["version"] != self.version:
            raise UnknownImage(
                f"image {image_id} was made by bundle {m['version']}, which no longer serves "
                f"(now {self.version}); request a new image set"
            )
        codes = np.array([int(c) for c in m["codes"].split(".")], dtype=np.int64)
        card = self.cardinalities
        if len(codes) != len(card) or (codes < 0).any() or (codes >= card).any():
            raise UnknownImage(f"image {image_id} names a condition this bundle does not have")
        return codes, int(m["seed"], 16), self._latent(image_id, m["z"])

    def _latent(self, image_id: str, text: str | None) -> np.ndarray | None:
        if text is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except ValueError as exc:
            raise UnknownImage(f"image {image_id}: the latent code is not base64url") from exc
        if len(raw) != 2 * self.z_dim:
            raise UnknownImage(
                f"image {image_id}: the latent code has {len(raw) // 2} values; this bundle needs {self.z_dim}"
            )
        z = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        if not np.isfinite(z).all():
            raise UnknownImage(f"image {image_id}: the latent code is not finite")
        return z
