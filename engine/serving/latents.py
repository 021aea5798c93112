"""The latent codes of optimised images, kept on the server under a short digest that their image id carries.

An image tuned to a shopper (preference maximisation, ``preference.PreferenceOptimiser``) is G(z, c) with an
optimised latent code z: 2·z_dim bytes in float16, too long to carry in an id that must fit every table and
endpoint (``features.ids.MAX_ID_LENGTH``). The Personaliser therefore writes z to a :class:`LatentStore` when it
makes the set and puts only the key (a digest of z, ``image_ids.ImageIdCodec.latent_key``) in the image id.
Rendering the id reads z back; a key the store no longer holds is an expired image.

:class:`MemoryLatentStore` keeps codes in this process (bounded, least recently used dropped first): the
default, for one worker. :class:`RedisLatentStore` keeps them in Redis for ``ttl_seconds`` (7 days by default),
so every worker and host renders every id; the API uses it when ``VITRINE_REDIS_URL`` is set.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

import numpy as np
import redis

from engine.serving import redis_client
from engine.serving.cache import LruCache

logger = logging.getLogger(__name__)

#: How a latent code is stored: float16, little-endian (what ``PreferenceOptimiser.optimise`` rounds z to).
LATENT_DTYPE = np.dtype("<f2")
WEEK_SECONDS = 7 * 86_400


def latent_bytes(z: np.ndarray) -> bytes:
    """z (z_dim,) as stored: float16 little-endian bytes."""
    return np.asarray(z, dtype=LATENT_DTYPE).tobytes()


def latent_from_bytes(raw: bytes, z_dim: int) -> np.ndarray | None:
    """(z_dim,) float32 from stored bytes; None when they are not z_dim finite values."""
    if len(raw) != LATENT_DTYPE.itemsize * z_dim:
        return None
    z = np.frombuffer(raw, dtype=LATENT_DTYPE).astype(np.float32)
    return z if np.isfinite(z).all() else None


class LatentStoreUnavailable(RuntimeError):
    """The latent store did not answer (a shared store that is down or unreachable)."""


class LatentStore(Protocol):
    """Latent codes by key. Keys are content digests, so writing a key again writes the same bytes."""

    def put_many(self, latents: Mapping[str, bytes]) -> None:
        """Store every (key, bytes) pair; a key already held is kept (and its lifetime renewed)."""
        ...

    def get(self, key: str) -> bytes | None:
        """The bytes stored under ``key``, or None when the store does not hold it (never stored, or expired)."""
        ...

    def delete_many(self, keys: list[str]) -> int:
        """Forget these codes (an erased shopper's images); how many were held."""
        ...


class MemoryLatentStore:
    """Latent codes in this process: at most ``max_entries``, the least recently used dropped first.

    Another process cannot read them: with several workers, an id made by one renders only there (the
    others answer that it expired). 100,000 codes of z_dim 64 take about 32 MB.
    """

    def __init__(self, *, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1; got {max_entries}")
        self.max_entries = max_entries
        self._codes: LruCache[bytes] = LruCache(max_entries)

    def put_many(self, latents: Mapping[str, bytes]) -> None:
        for key, raw in latents.items():
            self._codes.put(key, bytes(raw))

    def get(self, key: str) -> bytes | None:
        return self._codes.get(key)

    def delete_many(self, keys: list[str]) -> int:
        return sum(self._codes.discard(k) for k in keys)

    def __len__(self) -> int:
        return len(self._codes)


class RedisLatentStore:
    """Latent codes in Redis, shared by every worker and host: ``<prefix><key>`` → the code's bytes.

    Each code expires ``ttl_seconds`` after it was last written (a set served again, from the Personaliser's
    cache or not, writes its codes again), so Redis' expiry bounds what it holds. Any Redis failure raises
    :class:`LatentStoreUnavailable`.
    """

    def __init__(self, client: redis.Redis, *, prefix: str = "vitrine:latent:", ttl_seconds: int = WEEK_SECONDS):
        if ttl_seconds < 1:
            raise ValueError(f"ttl_seconds must be at least 1; got {ttl_seconds}")
        self.client = client
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds

    @classmethod
    def from_url(
        cls, url: str, *, timeout_seconds: float = 0.5, prefix: str = "vitrine:latent:", ttl_seconds: int = WEEK_SECONDS
    ) -> RedisLatentStore:
        """A store on the Redis at ``url`` (``redis://host:6379/0``), through :func:`redis_client.connect`: each
        command waits at most ``timeout_seconds``. Connects lazily (:meth:`problem` checks); ValueError when
        ``url`` is not a Redis URL."""
        return cls(redis_client.connect(url, timeout_seconds=timeout_seconds), prefix=prefix, ttl_seconds=ttl_seconds)

    @property
    def where(self) -> str:
        """``Redis at host:port/db`` (without the URL's credentials)."""
        return redis_client.describe(self.client)

    def problem(self) -> str | None:
        """None when Redis answers, else what went wrong."""
        return redis_client.problem(self.client)

    def put_many(self, latents: Mapping[str, bytes]) -> None:
        if not latents:
            return
        pipe = self.client.pipeline(transaction=False)
        for key, raw in latents.items():
            pipe.set(self.prefix + key, raw, ex=self.ttl_seconds)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            raise LatentStoreUnavailable(f"could not store latent codes in {self.where}: {exc}") from exc

    def get(self, key: str) -> bytes | None:
        try:
            raw = self.client.get(self.prefix + key)
        except redis.RedisError as exc:
            raise LatentStoreUnavailable(f"could not read a latent code from {self.where}: {exc}") from exc
        return raw if isinstance(raw, bytes) else None

    def delete_many(self, keys: list[str]) -> int:
        if not keys:
            return 0
        try:
            return int(self.client.delete(*(self.prefix + k for k in keys)))
        except redis.RedisError as exc:
            raise LatentStoreUnavailable(f"could not delete latent codes in {self.where}: {exc}") from exc


def open_latent_store(
    redis_url: str | None, *, ttl_seconds: int = WEEK_SECONDS, redis_prefix: str = redis_client.DEFAULT_PREFIX
) -> LatentStore:
    """The latent store a server process uses: in this process without ``redis_url``, else in Redis, under
    ``<redis_prefix>latent:``.

    A URL that is not a Redis URL is a ValueError (the start-up stops). A Redis that does not answer now is
    logged and kept: sets are still served (their codes not stored, see ``Personaliser``), and optimised
    images are answered 503 until it answers, without a restart.
    """
    if not redis_url:
        return MemoryLatentStore()
    prefix = redis_client.check_prefix(redis_prefix) + "latent:"
    store = RedisLatentStore.from_url(redis_url, ttl_seconds=ttl_seconds, prefix=prefix)
    if problem := store.problem():
        logger.error("latent store: %s; optimised images answer 503 until it answers", problem)
    else:
        logger.info("image latent codes are kept in %s for %d s", store.where, ttl_seconds)
    return store
