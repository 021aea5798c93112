"""Ingesting a batch of JSON-like events, all or nothing: the API's ``POST /v1/events`` calls this."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from engine.experiments.records import AddResult, Event

if TYPE_CHECKING:
    from engine.experiments.eventstore import EventStore

DAY_S = 86_400.0
#: How far ahead of the server's clock an event's time may be: clocks of shops and browsers drift.
MAX_CLOCK_SKEW_S = 300.0


class BadEvents(ValueError):
    """Some events of a batch are invalid; ``errors`` holds (index, client_event_id or None, message) each."""

    def __init__(self, errors: list[tuple[int, str | None, str]], total: int) -> None:
        self.errors = errors
        self.total = total
        first = "; ".join(f"events[{i}]: {msg}" for i, _, msg in errors[:3])
        super().__init__(
            f"{len(errors)} of {total} events are invalid and nothing was stored ({first}"
            f"{'; …' if len(errors) > 3 else ''}); fix them and resend the batch (client_event_id makes resending "
            "safe)"
        )


@dataclass(frozen=True, kw_only=True)
class EventLimits:
    """What a service accepts beyond an :class:`Event`'s own rules: the largest revenue of one purchase, and the
    window of event times, [earliest, latest] in epoch seconds (None: unbounded on that side).

    The window keeps a store's reports and retention honest: an event dated decades back or next year is a
    client's bug (or an attack on the report), not a shopper's action.
    """

    max_revenue: float | None = None
    earliest: float | None = None
    latest: float | None = None

    def __post_init__(self) -> None:
        if self.max_revenue is not None and not (math.isfinite(self.max_revenue) and self.max_revenue > 0):
            raise ValueError(f"max_revenue must be a positive finite number; got {self.max_revenue!r}")

    @classmethod
    def around(
        cls,
        now: float | None = None,
        *,
        retention_days: float | None,
        max_revenue: float | None,
        max_skew_s: float = MAX_CLOCK_SKEW_S,
    ) -> EventLimits:
        """Times in [now − retention_days, now + max_skew_s] (``retention_days`` None: no window at all)."""
        if retention_days is None:
            return cls(max_revenue=max_revenue)
        now = datetime.now(UTC).timestamp() if now is None else now
        return cls(max_revenue=max_revenue, earliest=now - retention_days * DAY_S, latest=now + max_skew_s)

    def problem(self, event: Event) -> str | None:
        """What is wrong with ``event`` under these limits, or None."""
        if self.max_revenue is not None and event.revenue is not None and event.revenue > self.max_revenue:
            return f"revenue {event.revenue:g} is above the largest this service accepts ({self.max_revenue:g})"
        if self.earliest is not None and event.ts < self.earliest:
            return f"ts {_iso(event.ts)} is before {_iso(self.earliest)}, the oldest time this service accepts"
        if self.latest is not None and event.ts > self.latest:
            return f"ts {_iso(event.ts)} is after {_iso(self.latest)}: it lies in the future (check the client's clock)"
        return None


def _iso(ts: float) -> str:
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, ValueError, OSError):
        return f"{ts:g} s after the epoch"


def ingest_events(
    store: EventStore, raw: Sequence[Mapping[str, Any]], *, limits: EventLimits | None = None
) -> AddResult:
    """Validate a batch of JSON-like events (:meth:`Event.from_dict`, then ``limits``) and store it. All or
    nothing: if any event is invalid, :class:`BadEvents` names each one and nothing is stored; if any reuses an
    id with another payload, the store's :class:`~engine.experiments.records.EventConflict` does the same."""
    events: list[Event] = []
    errors: list[tuple[int, str | None, str]] = []
    for i, data in enumerate(raw):
        cid = data.get("client_event_id") if isinstance(data, Mapping) else None
        try:
            event = Event.from_dict(data)
        except (ValueError, TypeError) as exc:
            errors.append((i, cid if isinstance(cid, str) else None, str(exc)))
            continue
        problem = limits.problem(event) if limits is not None else None
        if problem:
            errors.append((i, event.client_event_id, problem))
        events.append(event)
    if errors:
        raise BadEvents(errors, len(raw))
    stated = [isinstance(data, Mapping) and data.get("ts") is not None for data in raw]
    return store.add_events(events, ts_stated=stated)
