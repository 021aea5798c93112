"""Session events for personalisation: what a shopper did in the current session, folded into their vector.

A storefront posts session events (views, add_to_cart, purchases of catalogue items); the next image set
for that session reflects them, whichever worker serves it. :class:`SessionStore` is the interface;
:class:`MemorySessionStore` keeps sessions in this process (bounded, least recently used dropped first) — fine
for one worker and tests. With several workers or hosts, :class:`RedisSessionStore` keeps them in Redis, where
every worker reads what any worker stored; a store that cannot answer raises :class:`SessionStoreUnavailable`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import numpy as np
import redis

from engine.serving import redis_client
from features.schema import EVENT_TYPES

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class SessionEvent:
    item_id: str
    event_type: str  # one of features.schema.EVENT_TYPES
    timestamp: datetime

    def __post_init__(self) -> None:
        if self.event_type not in EVENT_TYPES:
            raise ValueError(f"event_type must be one of {EVENT_TYPES}; got {self.event_type!r}")
        if self.timestamp.utcoffset() is None:
            raise ValueError(
                f"timestamp {self.timestamp.isoformat()} has no time zone, so its moment is ambiguous; "
                "give it one (the API reads zoneless times as UTC)"
            )


def with_session(
    history_rows: np.ndarray,
    history_strengths: np.ndarray,
    session_rows: np.ndarray,
    session_strengths: np.ndarray,
    *,
    session_weight: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(distinct item rows, summed strengths) of a shopper's history plus a session weighted ``session_weight``×.

    What a fold-in sees for a known shopper in a session. Serving uses weight 1: on held-out purchases,
    heavier session weights predict worse (``vitrine evaluate sessions --data … --session-weights``).
    """
    rows = np.concatenate([np.asarray(history_rows, np.int64), np.asarray(session_rows, np.int64)])
    strengths = np.concatenate(
        [np.asarray(history_strengths, np.float64), session_weight * np.asarray(session_strengths, np.float64)]
    )
    uniq, inverse = np.unique(rows, return_inverse=True)
    return uniq, np.bincount(inverse.ravel(), weights=strengths, minlength=len(uniq))


class SessionStoreUnavailable(RuntimeError):
    """The session store did not answer (a shared store that is down or unreachable)."""


class SessionStore(Protocol):
    def add(self, session_id: str, events: list[SessionEvent]) -> int:
        """Store ``events`` for ``session_id``; answer the session's event count after them."""
        ...

    def delete(self, session_id: str) -> bool:
        """Forget the session (an erased shopper's); whether it was held."""
        ...

    def get(self, session_id: str) -> list[SessionEvent]:
        """The session's events, oldest first (equal times in arrival order); [] for an unknown session."""
        ...


# What a session takes in this process's memory, roughly: measured with tracemalloc, 2000 sessions of 50 events
# with 16-character item ids took 221 bytes an event (the event, its datetime and item id, a list slot).
_EVENT_BYTES = 160
_SESSION_BYTES = 200


def _session_bytes(session_id: str, events: list[SessionEvent]) -> int:
    return _SESSION_BYTES + len(session_id) + sum(_EVENT_BYTES + len(e.item_id) for e in events)


class MemorySessionStore:
    """Sessions in memory: at most ``max_events`` per session (oldest dropped), and at most ``max_sessions``
    sessions taking about ``max_bytes`` in all (least recently used dropped first), so that no stream of new
    sessions can exhaust the worker's memory."""

    def __init__(self, *, max_sessions: int = 100_000, max_events: int = 200, max_bytes: int = 256 * 2**20) -> None:
        if min(max_sessions, max_events, max_bytes) < 1:
            raise ValueError("max_sessions, max_events and max_bytes must be positive")
        self.max_sessions = max_sessions
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._data: OrderedDict[str, list[SessionEvent]] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def size_bytes(self) -> int:
        """About how much memory the stored sessions take."""
        return self._bytes

    def _forget(self, session_id: str) -> None:
        self._data.pop(session_id, None)
        self._bytes -= self._sizes.pop(session_id, 0)

    def add(self, session_id: str, events: list[SessionEvent]) -> int:
        with self._lock:
            stored = self._data.setdefault(session_id, [])
            stored.extend(events)
            stored.sort(key=lambda e: e.timestamp)
            del stored[: max(0, len(stored) - self.max_events)]
            self._data.move_to_end(session_id)
            size = _session_bytes(session_id, stored)
            self._bytes += size - self._sizes.get(session_id, 0)
            self._sizes[session_id] = size
            while len(self._data) > 1 and (len(self._data) > self.max_sessions or self._bytes > self.max_bytes):
                self._forget(next(iter(self._data)))
            return len(stored)

    def get(self, session_id: str) -> list[SessionEvent]:
        with self._lock:
            events = self._data.get(session_id)
            if events is None:
                return []
            self._data.move_to_end(session_id)
            return list(events)

    def delete(self, session_id: str) -> bool:
        with self._lock:
            held = session_id in self._data
            self._forget(session_id)
            return held


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# One add, atomic: Redis runs a script to its end before any other command, so concurrent writers in any
# worker or host never interleave inside an add. KEYS[1]: the session's events, a sorted set scored by event
# time (µs since the epoch) whose members are an arrival number (16 hex digits, so that equal times sort in
# arrival order) followed by the event's JSON; KEYS[2]: the session's arrival counter. ARGV: max events,
# TTL in ms, then a (score, JSON) pair per event. Answers the session's event count.
_ADD_SCRIPT = """
local n = (#ARGV - 2) / 2
if n == 0 then
  return redis.call('ZCARD', KEYS[1])
end
local last = redis.call('INCRBY', KEYS[2], n)
for j = 1, n do
  redis.call('ZADD', KEYS[1], ARGV[1 + 2 * j], string.format('%016x', last - n + j) .. ARGV[2 + 2 * j])
end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[1]) - 1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return redis.call('ZCARD', KEYS[1])
"""
_ARRIVAL_DIGITS = 16


class RedisSessionStore:
    """Sessions in Redis, shared by every worker and host; the same answers as :class:`MemorySessionStore`.

    At most ``max_events`` per session (the oldest dropped). A session expires ``ttl_seconds`` after its last
    event: Redis' expiry bounds the number of sessions, as the in-memory store's LRU bound does. Each session
    is a sorted set ``<prefix>{<session_id>}:events`` scored by event time, beside its arrival counter
    ``<prefix>{<session_id>}:seq`` (the braces keep both on one Redis Cluster slot); events are compact JSON,
    ``{"item_id":…,"event_type":…,"ts_us":…}``. Any Redis failure raises :class:`SessionStoreUnavailable`.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "vitrine:session:",
        max_events: int = 200,
        ttl_seconds: int = 86_400,
    ) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1; got {max_events}")
        if ttl_seconds < 1:
            raise ValueError(f"ttl_seconds must be at least 1; got {ttl_seconds}")
        self.client = client
        self.prefix = prefix
        self.max_events = max_events
        self.ttl_seconds = ttl_seconds
        self._add = client.register_script(_ADD_SCRIPT)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout_seconds: float = 0.5,
        prefix: str = "vitrine:session:",
        max_events: int = 200,
        ttl_seconds: int = 86_400,
    ) -> RedisSessionStore:
        """A store on the Redis at ``url`` (``redis://host:6379/0``), through :func:`redis_client.connect`:
        ``timeout_seconds`` bounds each command, so a Redis outage costs a request a fraction of a second.
        Connects lazily (:meth:`problem` checks); ValueError when ``url`` is not a Redis URL."""
        return cls(
            redis_client.connect(url, timeout_seconds=timeout_seconds),
            prefix=prefix,
            max_events=max_events,
            ttl_seconds=ttl_seconds,
        )

    @property
    def where(self) -> str:
        """``Redis at host:port/db`` (without the URL's credentials)."""
        return redis_client.describe(self.client)

    def problem(self) -> str | None:
        """None when Redis answers, else what went wrong."""
        return redis_client.problem(self.client)

    def _keys(self, session_id: str) -> list[str]:
        return [f"{self.prefix}{{{session_id}}}:events", f"{self.prefix}{{{session_id}}}:seq"]

    def add(self, session_id: str, events: list[SessionEvent]) -> int:
        args: list[int | str] = [self.max_events, self.ttl_seconds * 1000]
        for e in events:
            ts_us = (e.timestamp - _EPOCH) // _MICROSECOND
            record = {"item_id": e.item_id, "event_type": e.event_type, "ts_us": ts_us}
            args += [ts_us, json.dumps(record, separators=(",", ":"), ensure_ascii=False)]
        try:
            return int(self._add(keys=self._keys(session_id), args=args))
        except redis.RedisError as exc:
            raise SessionStoreUnavailable(f"could not store session events in {self.where}: {exc}") from exc

    def get(self, session_id: str) -> list[SessionEvent]:
        try:
            members: list[Any] = list(self.client.zrange(self._keys(session_id)[0], 0, -1))
        except redis.RedisError as exc:
            raise SessionStoreUnavailable(f"could not read a session from {self.where}: {exc}") from exc
        return [_event(m.decode() if isinstance(m, bytes) else m) for m in members]

    def delete(self, session_id: str) -> bool:
        try:
            return bool(self.client.delete(*self._keys(session_id)))
        except redis.RedisError as exc:
            raise SessionStoreUnavailable(f"could not delete a session in {self.where}: {exc}") from exc


def _event(member: str) -> SessionEvent:
    """A stored member (arrival number, then the event's JSON) as the event."""
    record = json.loads(member[_ARRIVAL_DIGITS:])
    return SessionEvent(
        item_id=record["item_id"],
        event_type=record["event_type"],
        timestamp=_EPOCH + record["ts_us"] * _MICROSECOND,
    )


def open_session_store(
    redis_url: str | None,
    *,
    ttl_seconds: int = 86_400,
    memory_bytes: int = 256 * 2**20,
    redis_prefix: str = redis_client.DEFAULT_PREFIX,
) -> SessionStore:
    """The session store a server process uses: in this process without ``redis_url``, else in Redis, under
    ``<redis_prefix>session:``.

    A URL that is not a Redis URL is a ValueError: a misconfiguration that can never work stops the start-up.
    A Redis that does not answer now is logged as an error and kept, not replaced by an in-process store: the
    image sets are served without session events (and session posts refused) until it answers, with no
    restart. Falling back to memory would silently split every session between the workers again, and a
    server that refused to start would take the image sets down with Redis.
    """
    if not redis_url:
        return MemorySessionStore(max_bytes=memory_bytes)
    store = RedisSessionStore.from_url(
        redis_url, ttl_seconds=ttl_seconds, prefix=redis_client.check_prefix(redis_prefix) + "session:"
    )
    problem = store.problem()
    if problem:
        logger.error("session store: %s; image sets are served without session events until it answers", problem)
    else:
        logger.info(
            "session events are kept in %s (a session expires %d s after its last event)",
            store.where,
            ttl_seconds,
        )
    return store
