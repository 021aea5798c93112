"""Shopper privacy in serving: pseudonyms in, the sessions a shopper used, and the right to erasure.

- :class:`Identities` turns a shop's shopper id into the pseudonym everything below the HTTP layer uses
  (:mod:`features.pseudonyms`), recognising a shopper known under an older key, and says whether the serving
  bundle must treat a pseudonym as a new shopper because they were erased after it was trained.
- :class:`SessionOwners` remembers which sessions each shopper used, so an erasure finds them: in this process,
  or in Redis (a set per shopper, expiring with the sessions) when the sessions are there too.
- :func:`forget` erases a shopper at once: their events, exposures and assignments in the event store, their
  sessions, the sets and images cached for them, and a register entry that masks them in every bundle
  trained before now and keeps them out of the next training. :func:`audit` counts what remains.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from engine.artifacts.erasures import ErasureRegister
from engine.experiments.eventstore import EventStore
from engine.serving import redis_client
from engine.serving.cache import LruCache
from engine.serving.sessions import SessionStore, SessionStoreUnavailable
from features.pseudonyms import Pseudonymiser, load_or_create_keyring

logger = logging.getLogger(__name__)

#: The id a masked (erased) shopper is looked up by: no bundle knows it, so they are served as new.
MASKED_PREFIX = "erased~"


class Identities:
    """Pseudonyms for a shop's shopper ids, and the erasure register that masks them in older bundles."""

    def __init__(self, root: Path, pseudonyms: Pseudonymiser | None = None) -> None:
        self.pseudonyms = pseudonyms or load_or_create_keyring(root)
        self.register = ErasureRegister(root)

    def resolve(self, user_id: str, knows: Callable[[str], bool] = lambda _: False) -> str:
        """The shopper's pseudonym: under the first key whose pseudonym the serving bundle ``knows`` (so a
        shopper trained under a key since rotated is still recognised), else under the active key."""
        candidates = self.pseudonyms.candidates(user_id)
        return next((c for c in candidates if knows(c)), candidates[0])

    def lookup_id(self, pseudonym: str, manifest: dict[str, Any] | None) -> str:
        """The id the bundle is asked about: the pseudonym, or one no bundle knows when the shopper was erased
        after the bundle's data was read (its ``manifest``'s ``data.read_at``; unknown: any erasure masks)."""
        read_at = ((manifest or {}).get("data") or {}).get("read_at")
        trained_at = float(read_at) if read_at is not None else None
        when = self.register.erased_at(pseudonym)
        if when is not None and (trained_at is None or when >= trained_at):
            return MASKED_PREFIX + pseudonym
        return pseudonym


class SessionOwners:
    """Which sessions each shopper (pseudonym) used: in this process, or in Redis with ``client`` (a set per
    shopper, ``<prefix><pseudonym>``)."""

    def __init__(
        self,
        client: redis.Redis | None = None,
        *,
        ttl_seconds: int = 86_400,
        max_users: int = 100_000,
        prefix: str = "vitrine:owner:",
    ):
        self.client = client
        self.ttl_seconds = ttl_seconds
        self.prefix = prefix
        self._local: LruCache[set[str]] = LruCache(max_users)

    @classmethod
    def open(
        cls, redis_url: str | None, *, ttl_seconds: int = 86_400, redis_prefix: str = redis_client.DEFAULT_PREFIX
    ) -> SessionOwners:
        """In Redis with ``redis_url``, under ``<redis_prefix>owner:``; else in this process."""
        client = redis_client.connect(redis_url) if redis_url else None
        return cls(client, ttl_seconds=ttl_seconds, prefix=redis_client.check_prefix(redis_prefix) + "owner:")

    def link(self, pseudonym: str, session_id: str) -> None:
        if self.client is None:
            owned = self._local.get(pseudonym) or set()
            owned.add(session_id)
            self._local.put(pseudonym, owned)
            return
        key = self.prefix + pseudonym
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.sadd(key, session_id)
            pipe.expire(key, self.ttl_seconds)
            pipe.execute()
        except redis.RedisError as exc:  # the set is served regardless; the link is best effort, logged
            logger.error("could not link a session to its shopper in Redis: %s", exc)

    def sessions(self, pseudonym: str) -> set[str]:
        if self.client is None:
            return set(self._local.get(pseudonym) or ())
        members: Any = self.client.smembers(self.prefix + pseudonym)
        return {m.decode() if isinstance(m, bytes) else str(m) for m in members}

    def drop(self, pseudonym: str) -> None:
        if self.client is None:
            self._local.discard(pseudonym)
        else:
            self.client.delete(self.prefix + pseudonym)


def drop_sessions(pseudonyms: Iterable[str], *, sessions: SessionStore, owners: SessionOwners) -> int:
    """Delete the sessions these shoppers were linked to in ``owners``, and the links; how many were held."""
    dropped = 0
    for p in pseudonyms:
        try:
            dropped += sum(sessions.delete(s) for s in sorted(owners.sessions(p)))
            owners.drop(p)
        except (SessionStoreUnavailable, redis.RedisError) as exc:  # the register masks them meanwhile
            logger.error("could not drop an erased shopper's sessions: %s", exc)
    return dropped


@dataclass
class Erasure:
    """What an erasure removed, per place (counts only: no ids)."""

    pseudonyms: int
    removed: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"pseudonyms": self.pseudonyms, "removed": dict(self.removed)}

    def __str__(self) -> str:
        return json.dumps(self.to_dict())


def forget(
    candidates: list[str],
    *,
    identities: Identities,
    events: EventStore | None,
    sessions: SessionStore,
    owners: SessionOwners,
    purge_caches: Callable[[list[str]], dict[str, int]] = lambda _: {},
    now: float | None = None,
) -> Erasure:
    """Erase the shopper whose pseudonyms (under every key) are ``candidates``.

    The register entry is written first: from then on every worker serves them as new, whatever else fails.
    Then their sessions (those they were seen in), their rows in the event store and the caches go.
    """
    identities.register.add(candidates, now if now is not None else time.time())
    result = Erasure(pseudonyms=len(candidates))
    session_ids: set[str] = set()
    for p in candidates:
        session_ids |= owners.sessions(p)
    if events is not None:
        session_ids |= events.user_sessions(candidates)
        result.removed.update(events.forget_users(candidates))
    result.removed["sessions"] = sum(sessions.delete(s) for s in sorted(session_ids))
    for p in candidates:
        owners.drop(p)
    result.removed.update(purge_caches(candidates))
    logger.info("erased a shopper: %s", result)
    return result


def bundle_traces(bundle_dir: Path, candidates: Iterable[str]) -> dict[str, int]:
    """How many of ``candidates`` a bundle folder's files name: its user ids (embeddings, ranker)."""
    import numpy as np

    wanted = set(candidates)
    found: dict[str, int] = {}
    for path in sorted(Path(bundle_dir).rglob("*.npz")):
        with np.load(path, allow_pickle=False) as arrays:
            hits = sum(
                int(np.isin(arrays[name].astype(str), list(wanted)).sum())
                for name in arrays.files
                if arrays[name].dtype.kind in "US"
            )
        if hits:
            found[str(path.relative_to(bundle_dir))] = hits
    for path in sorted(Path(bundle_dir).rglob("*.json")):
        text = path.read_text(encoding="utf-8", errors="replace")
        hits = sum(text.count(p) for p in wanted)
        if hits:
            found[str(path.relative_to(bundle_dir))] = hits
    return found


def shoppers_known_to(data: Path, pseudonyms: Pseudonymiser, knows: Callable[[str], bool], k: int) -> list[str]:
    """The first ``k`` shoppers of the data folder ``data``, by the ids the shop gave them, whose pseudonym a
    bundle ``knows``: the bundle holds pseudonyms only, so a demo page or a benchmark that needs shoppers by
    their own ids reads them from the shop's data."""
    from features.readers import read_store

    known = []
    for user in read_store(Path(data)).events["user_id"].drop_duplicates():
        if any(knows(p) for p in pseudonyms.candidates(str(user))):
            known.append(str(user))
            if len(known) == k:
                break
    return known
