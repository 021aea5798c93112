"""Ingesting a batch of JSON-like events, all or nothing: the API's ``POST /v1/events`` calls this."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from engine.experiments.records import AddResult, Event

if TYPE_CHECKING:
    from engine.experiments.eventstore import EventStore


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


def ingest_events(store: EventStore, raw: Sequence[Mapping[str, Any]]) -> AddResult:
    """Validate a batch of JSON-like events (:meth:`Event.from_dict`) and store it. All or nothing: if any
    event is invalid, :class:`BadEvents` names each one and nothing is stored."""
    events: list[Event] = []
    errors: list[tuple[int, str | None, str]] = []
    for i, data in enumerate(raw):
        try:
            events.append(Event.from_dict(data))
        except (ValueError, TypeError) as exc:
            cid = data.get("client_event_id") if isinstance(data, Mapping) else None
            errors.append((i, cid if isinstance(cid, str) else None, str(exc)))
    if errors:
        raise BadEvents(errors, len(raw))
    return store.add_events(events)
