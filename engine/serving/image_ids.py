"""Image ids: short, signed references to generated images, and the seeds behind them.

An id names what a worker needs to regenerate an image, and is signed so that only the server can make one:

    <bundle>.<condition>.<seed>[.<latent>].<tag>

- ``bundle``: 8 base64url characters of a digest of the bundle version; an id from another bundle is refused;
- ``condition``: the row of the bundle's condition table (``ConditionModel.codes``), in decimal; rows past its
  end name the combinations of attribute values the catalogue may lack (images of new products);
- ``seed``: the noise seed, 16 hex digits;
- ``latent``: only for an image tuned to a shopper, the key (16 base64url characters, a digest of the bundle
  and of z) under which its optimised latent code z is kept on the server (``latents.LatentStore``);
- ``tag``: HMAC-SHA256 of the rest under the server's image key, truncated to 128 bits (22 base64url).

The fields have fixed widths, whatever the bundle's version, z size or number of attributes, so an id is at most
85 characters and fits every layer that takes an id (``features.ids.MAX_ID_LENGTH``). The key comes from the
``VITRINE_IMAGE_KEY`` setting or, unset, from a key file created once in the artifacts root
(:func:`load_or_create_key`), so every worker on the host and every restart share it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.serving.latents import latent_bytes
from engine.serving.types import UnknownImage
from features.ids import MAX_ID_LENGTH

logger = logging.getLogger(__name__)

KEY_FILE = ".image-key"
MIN_KEY_BYTES = 16
_TAG_BYTES = 16
_DIGEST_BYTES = 6  # the bundle field: 48 bits, 8 base64url characters
_LATENT_BYTES = 12  # the latent key: 96 bits, 16 base64url characters
_B64 = r"[A-Za-z0-9_-]"
_MAX_ROWS = 10**9  # the condition field holds at most 9 digits
# ASCII digits only (``\d`` takes any script's), at most 9 of them, and matched in full (``$`` would also take
# a trailing newline): any other string is simply not an id.
IMAGE_ID_RE = re.compile(
    rf"(?P<bundle>{_B64}{{8}})\.(?P<condition>0|[1-9][0-9]{{0,8}})\.(?P<seed>[0-9a-f]{{16}})"
    rf"(?:\.(?P<latent>{_B64}{{16}}))?\.(?P<tag>{_B64}{{22}})"
)
_INVALID = "; request a new image set"


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from the parts' text: the same parts give the same seed in every process."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & ((1 << 63) - 1)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def bundle_tag(version: str) -> str:
    """The ``bundle`` field of the ids that bundle ``version`` issues: a digest of the version, 8 base64url."""
    return _b64(hashlib.blake2b(version.encode(), digest_size=_DIGEST_BYTES).digest())


def issuing_bundle(image_id: str) -> str | None:
    """The ``bundle`` field of ``image_id`` (:func:`bundle_tag` of the bundle that issued it), or None for a string
    that is no id. Not verified: only that bundle's :class:`ImageIdCodec` can check the signature."""
    m = IMAGE_ID_RE.fullmatch(image_id) if len(image_id) <= MAX_ID_LENGTH else None
    return m["bundle"] if m is not None else None


def load_or_create_key(root: Path) -> bytes:
    """The image key kept in ``<root>/.image-key``, created once (32 random bytes, hex, mode 0600).

    Every worker on the host reads the same file, and a restart keeps the ids it issued valid. Creation is
    atomic (the key is written to a private temporary file, then linked into place unless another worker got
    there first), so concurrent workers agree on one key. Several hosts need the same key: set
    ``VITRINE_IMAGE_KEY`` on each instead. ValueError says what to do when the file cannot be used.
    """
    root = Path(root)
    path = root / KEY_FILE
    if not path.exists():
        try:
            root.mkdir(parents=True, exist_ok=True)
            tmp = root / f"{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
            try:
                os.link(tmp, path)
                logger.info("created the image-id key file %s", path)
            except FileExistsError:
                pass  # another worker created it first: use theirs
            finally:
                tmp.unlink()
        except OSError as exc:
            raise ValueError(
                f"cannot create the image-id key file {path} ({exc}); make {root} writable, or set "
                f"VITRINE_IMAGE_KEY to a secret of at least {MIN_KEY_BYTES} characters"
            ) from exc
    try:
        key = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"cannot read the image-id key file {path} ({exc}); delete it to make a new one (ids issued "
            "before then stop rendering), or set VITRINE_IMAGE_KEY"
        ) from exc
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"the image-id key file {path} holds {len(key)} bytes, fewer than {MIN_KEY_BYTES}; delete it")
    return key


@dataclass(frozen=True, kw_only=True)
class ImageRef:
    """What an image id names: the condition (its row and codes), the noise seed, and the latent key if any."""

    condition: int
    codes: np.ndarray  # (n_attributes,)
    seed: int
    latent: str | None = None


class ImageIdCodec:
    """Writes and verifies the signed image ids of one bundle (its version and condition table)."""

    def __init__(
        self, version: str, conditions: np.ndarray, key: bytes, *, cardinalities: Sequence[int] | None = None
    ) -> None:
        """``conditions``: (n_conditions, n_attributes) the bundle's distinct conditions; ``key``: the secret.

        ``cardinalities`` (the number of values of each attribute), when given, also names every combination of
        values, in the catalogue or not: rows from ``n_conditions`` on are the combinations in mixed-radix order
        (the first attribute varying slowest), so that images of a product the catalogue lacks have ids too."""
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the image key must be at least {MIN_KEY_BYTES} bytes; got {len(key)}")
        self.version = version
        self.conditions = np.asarray(conditions, dtype=np.int64)
        self.cardinalities = tuple(int(c) for c in cardinalities or ())
        self._combinations = math.prod(self.cardinalities) if self.cardinalities else 0
        if len(self.conditions) + self._combinations > _MAX_ROWS:
            raise ValueError(f"{len(self.conditions) + self._combinations} condition rows; an id names fewer than 10^9")
        self._rows = {tuple(int(v) for v in c): r for r, c in enumerate(self.conditions)}
        self._key = key
        self.bundle_tag = bundle_tag(version)  # the bundle field of every id this codec writes

    def row_of(self, codes: Sequence[int] | np.ndarray) -> int:
        """The condition row of a combination of codes: its catalogue row, else (with ``cardinalities``) its row
        among all combinations; ValueError when this codec cannot name it."""
        key = tuple(int(v) for v in codes)
        row = self._rows.get(key)
        if row is not None:
            return row
        if not self.cardinalities or len(key) != len(self.cardinalities):
            raise ValueError(f"condition {key} is not one of this bundle's catalogue conditions")
        if not all(0 <= v < c for v, c in zip(key, self.cardinalities, strict=True)):
            raise ValueError(f"condition {key} lies outside the attributes' {self.cardinalities} values")
        return len(self.conditions) + int(np.ravel_multi_index(key, self.cardinalities))

    def _codes(self, row: int) -> np.ndarray | None:
        if row < len(self.conditions):
            return self.conditions[row]
        if row - len(self.conditions) < self._combinations:
            return np.array(np.unravel_index(row - len(self.conditions), self.cardinalities), dtype=np.int64)
        return None

    def _tag(self, payload: str) -> str:
        mac = hmac.new(self._key, b"vitrine image id\0" + payload.encode(), hashlib.sha256)
        return _b64(mac.digest()[:_TAG_BYTES])

    def latent_key(self, z: np.ndarray) -> str:
        """The store key of an optimised latent code z (z_dim,): a digest of this bundle and z (as stored)."""
        h = hashlib.blake2b(self.version.encode() + b"\0", digest_size=_LATENT_BYTES)
        h.update(latent_bytes(z))
        return _b64(h.digest())

    def encode(self, condition: int, seed: int, latent: str | None = None) -> str:
        """The id of G(z, c) for condition row ``condition`` and noise ``seed`` (z stored under ``latent``)."""
        if not 0 <= condition < len(self.conditions) + self._combinations or not 0 <= seed < 1 << 64:
            raise ValueError(f"no image id for condition row {condition} and seed {seed} in this bundle")
        payload = f"{self.bundle_tag}.{int(condition)}.{seed:016x}" + (f".{latent}" if latent is not None else "")
        return f"{payload}.{self._tag(payload)}"

    def decode(self, image_id: str) -> ImageRef:
        """What a valid id of this bundle names; UnknownImage, saying what to do, for any other string."""
        m = IMAGE_ID_RE.fullmatch(image_id) if len(image_id) <= MAX_ID_LENGTH else None
        if m is None:
            raise UnknownImage(f"{image_id[:MAX_ID_LENGTH]!r} is not an image id this service issued{_INVALID}")
        payload = image_id[: m.start("tag") - 1]
        if not hmac.compare_digest(self._tag(payload), m["tag"]):
            raise UnknownImage(
                f"image {image_id} does not carry this service's signature (it was changed, or made by another "
                f"deployment){_INVALID}"
            )
        if m["bundle"] != self.bundle_tag:
            raise UnknownImage(
                f"image {image_id} was made by another bundle, which no longer serves (now {self.version})" + _INVALID
            )
        row = int(m["condition"])  # a Python int: an absurd number is out of range, never an overflow
        codes = self._codes(row)
        if codes is None:
            raise UnknownImage(f"image {image_id} names a condition this bundle does not have{_INVALID}")
        return ImageRef(condition=row, codes=codes, seed=int(m["seed"], 16), latent=m["latent"])
