"""The privacy operations a data protection officer runs from the command line (``vitrine privacy``).

:func:`forget_shopper` erases a shopper without going through a server: the event store at a database URL, the
sessions in Redis, their precomputed image sets (the SQLite file in the artifacts root, and Redis) (a server's
in-process sessions and caches are reached by the register instead: every server masks the shopper within seconds
and drops what it cached for them, see ``Service.follow_erasures``).
:func:`audit_shopper` looks for what remains of a shopper in each place an erasure covers and says where.
:func:`retain` deletes events and exposures older than a number of days.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.artifacts.registry import ArtifactRegistry
from engine.experiments.eventstore import EventStore
from engine.serving import redis_client
from engine.serving.config import PersonaliserConfig
from engine.serving.precomputed import PrecomputedSets
from engine.serving.precomputed_store import PrecomputedStore, RedisPrecomputedStore, SqlitePrecomputedStore
from engine.serving.privacy import Erasure, Identities, SessionOwners, bundle_traces, forget
from engine.serving.sessions import MemorySessionStore, RedisSessionStore, SessionStore


def _stores(redis_url: str | None, redis_prefix: str) -> tuple[SessionStore, SessionOwners]:
    if redis_url:
        prefix = redis_client.check_prefix(redis_prefix)
        sessions = RedisSessionStore.from_url(redis_url, prefix=prefix + "session:")
        return sessions, SessionOwners.open(redis_url, redis_prefix=prefix)
    return MemorySessionStore(), SessionOwners()  # nothing shared to reach: the servers' own are masked


def _precomputed(artifacts: Path, redis_url: str | None, redis_prefix: str) -> dict[str, PrecomputedStore]:
    """Where precomputed sets may be: the SQLite file in the artifacts root, and Redis when a URL is given."""
    stores: dict[str, PrecomputedStore] = {"precomputed sets (SQLite)": SqlitePrecomputedStore.under(artifacts)}
    if redis_url:
        prefix = redis_client.check_prefix(redis_prefix) + "precomputed:"
        stores["precomputed sets (Redis)"] = RedisPrecomputedStore.from_url(redis_url, prefix=prefix)
    return stores


def forget_shopper(
    user_id: str,
    *,
    artifacts: Path,
    database_url: str,
    redis_url: str | None = None,
    redis_prefix: str = redis_client.DEFAULT_PREFIX,
) -> Erasure:
    """Erase a shopper (:func:`engine.serving.privacy.forget`) from the command line; ``redis_prefix``: the
    servers' ``VITRINE_REDIS_PREFIX``."""
    identities = Identities(artifacts)
    sessions, owners = _stores(redis_url, redis_prefix)
    stores = _precomputed(artifacts, redis_url, redis_prefix).values()
    precomputed = [PrecomputedSets(s, PersonaliserConfig()) for s in stores]
    with EventStore(database_url) as events:
        return forget(
            identities.pseudonyms.candidates(user_id),
            identities=identities,
            events=events,
            sessions=sessions,
            owners=owners,
            purge_caches=lambda ids: {"precomputed_sets": sum(p.forget(ids) for p in precomputed)},
        )


@dataclass
class Audit:
    """Where a shopper's traces remain: place -> count (0 everywhere is a clean audit)."""

    places: dict[str, int] = field(default_factory=dict)
    erased_at: float | None = None
    bundle: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not any(self.places.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "places": self.places,
            "erased_at": self.erased_at,
            "bundle": self.bundle,
            "notes": self.notes,
        }


def audit_shopper(
    user_id: str,
    *,
    artifacts: Path,
    database_url: str,
    redis_url: str | None = None,
    redis_prefix: str = redis_client.DEFAULT_PREFIX,
    version: str | None = None,
) -> Audit:
    """What the event store, the shared sessions and the newest bundle (or ``version``) still hold of a shopper,
    by every pseudonym they have under the keyring's keys. For an erased shopper, what they did after the erasure
    is new data, not a trace: the event store is searched up to the erasure."""
    identities = Identities(artifacts)
    candidates = identities.pseudonyms.candidates(user_id)
    audit = Audit(erased_at=max((identities.register.erased_at(p) or 0.0 for p in candidates), default=0.0) or None)
    with EventStore(database_url) as events:
        traces = events.user_traces(candidates, until=audit.erased_at)  # after an erasure: what it covered
        audit.places.update({f"event store: {k}": v for k, v in traces.items()})
        named_sessions = events.user_sessions(candidates)
    if redis_url:
        sessions, owners = _stores(redis_url, redis_prefix)
        linked = set().union(*(owners.sessions(p) for p in candidates)) | named_sessions
        audit.places["sessions (Redis)"] = sum(bool(sessions.get(s)) for s in linked)
        audit.places["session links (Redis)"] = sum(len(owners.sessions(p)) for p in candidates)
    else:
        audit.notes.append("no Redis URL: in-process sessions and caches of running servers are not inspected")
    for place, store in _precomputed(artifacts, redis_url, redis_prefix).items():
        audit.places[place] = store.count(shoppers=candidates)
    registry = ArtifactRegistry(artifacts)
    versions = [info.version for info in registry.versions()]
    audit.bundle = version or (max(versions) if versions else None)
    if audit.bundle is not None:
        for path, hits in bundle_traces(registry.path(audit.bundle), candidates).items():
            audit.places[f"bundle {audit.bundle}: {path}"] = hits
        if audit.erased_at is not None and any(k.startswith("bundle") and v for k, v in audit.places.items()):
            audit.notes.append("the bundle was trained before the erasure: serving masks them; retrain to drop them")
    return audit


def retain(days: float, *, database_url: str, now: float | None = None) -> dict[str, int]:
    """Delete events and exposures older than ``days``; rows per table."""
    if days <= 0:
        raise ValueError(f"--days must be positive; got {days}")
    cutoff = (now if now is not None else time.time()) - days * 86_400
    with EventStore(database_url) as events:
        return events.delete_before(cutoff)
