"""Session events for personalisation: what a shopper did in the current session, folded into their vector.

A storefront posts session events (views, add_to_cart, purchases of catalogue items); the next image set
for that session reflects them. :class:`SessionStore` is the interface; :class:`MemorySessionStore` keeps
sessions in this process (bounded, least recently used dropped first) — fine for one worker and tests.
With several workers, use the event store (``engine.experiments.eventstore``) so every worker sees every event.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import numpy as np

from features.schema import EVENT_TYPES


@dataclass(frozen=True, kw_only=True)
class SessionEvent:
    item_id: str
    event_type: str  # one of features.schema.EVENT_TYPES
    timestamp: datetime

    def __post_init__(self) -> None:
        if self.event_type not in EVENT_TYPES:
            raise ValueError(f"event_type must be one of {EVENT_TYPES}; got {self.event_type!r}")


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


class SessionStore(Protocol):
    def add(self, session_id: str, events: list[SessionEvent]) -> int: ...

    def get(self, session_id: str) -> list[SessionEvent]: ...


class MemorySessionStore:
    """Sessions in memory, at most ``max_sessions`` (LRU) and ``max_events`` per session (oldest dropped)."""

    def __init__(self, *, max_sessions: int = 100_000, max_events: int = 200) -> None:
        self.max_sessions = max_sessions
        self.max_events = max_events
        self._data: OrderedDict[str, list[SessionEvent]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, session_id: str, events: list[SessionEvent]) -> int:
        with self._lock:
            stored = self._data.setdefault(session_id, [])
            stored.extend(events)
            stored.sort(key=lambda e: e.timestamp)
            del stored[: max(0, len(stored) - self.max_events)]
            self._data.move_to_end(session_id)
            while len(self._data) > self.max_sessions:
                self._data.popitem(last=False)
            return len(stored)

    def get(self, session_id: str) -> list[SessionEvent]:
        with self._lock:
            events = self._data.get(session_id)
            if events is None:
                return []
            self._data.move_to_end(session_id)
            return list(events)
