"""What the event store holds: shopper events and exposures, validated when they are made.

Times are UTC epoch seconds (:func:`to_epoch` converts a datetime); ids are non-empty strings of at most
:data:`features.ids.MAX_ID_LENGTH` characters, the width of the id columns in :mod:`engine.experiments.tables`.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from features.ids import MAX_ID_LENGTH

#: Event kinds. view / add_to_cart / purchase name a catalogue item; a click names an image (and maybe its item).
EVENT_KINDS: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase")
ITEM_KINDS: tuple[str, ...] = ("view", "add_to_cart", "purchase")
#: What an event says, beside its id and time: a resent id must say the same (:func:`differences`).
PAYLOAD_FIELDS: tuple[str, ...] = ("kind", "user_id", "session_id", "item_id", "image_id", "revenue")


def to_epoch(moment: datetime | float | int | None) -> float:
    """UTC seconds since the epoch; ``None`` is now. A datetime without a zone is taken as UTC."""
    if moment is None:
        return datetime.now(UTC).timestamp()
    if isinstance(moment, datetime):
        return (moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment).timestamp()
    if isinstance(moment, bool) or not isinstance(moment, int | float) or not math.isfinite(moment):
        raise ValueError(f"a timestamp must be a datetime or epoch seconds; got {moment!r}")
    return float(moment)


def _check_id(name: str, value: str | None, *, required: bool = False) -> None:
    if value is None:
        if required:
            raise ValueError(f"{name} is required")
        return
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise ValueError(f"{name} must be a non-empty string of at most {MAX_ID_LENGTH} characters; got {value!r}")


@dataclass(frozen=True, kw_only=True)
class Event:
    """One shopper action. ``ts`` is UTC epoch seconds (use :func:`to_epoch` to convert a datetime).

    view / add_to_cart / purchase need ``item_id``; a click needs ``image_id`` or ``item_id``; a purchase
    needs ``revenue`` ≥ 0 and nothing else may carry revenue. At least one of ``user_id`` and
    ``session_id`` says whose action it was (reports attribute it to the experiment's unit through them).
    """

    client_event_id: str
    kind: str
    ts: float
    user_id: str | None = None
    session_id: str | None = None
    item_id: str | None = None
    image_id: str | None = None
    revenue: float | None = None

    def __post_init__(self) -> None:
        _check_id("client_event_id", self.client_event_id, required=True)
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(EVENT_KINDS)}; got {self.kind!r}")
        object.__setattr__(self, "ts", to_epoch(self.ts))
        for name in ("user_id", "session_id", "item_id", "image_id"):
            _check_id(name, getattr(self, name))
        if self.user_id is None and self.session_id is None:
            raise ValueError("an event needs a user_id or a session_id (or both)")
        if self.kind in ITEM_KINDS and self.item_id is None:
            raise ValueError(f"a {self.kind} event needs the item_id it concerns")
        if self.kind == "click" and self.item_id is None and self.image_id is None:
            raise ValueError("a click event needs the image_id clicked (or the item_id)")
        if self.kind == "purchase":
            value = self.revenue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"a purchase needs revenue, a finite number ≥ 0; got {value!r}")
            object.__setattr__(self, "revenue", float(value))
        elif self.revenue is not None:
            raise ValueError(f"only purchases carry revenue; this {self.kind} has revenue={self.revenue!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        """Build from a JSON-like dict; unknown keys are errors. ``ts`` may be a datetime, ISO string, epoch or
        absent (now)."""
        known = {"client_event_id", "kind", "ts", "user_id", "session_id", "item_id", "image_id", "revenue"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fields {unknown}; an event has {sorted(known)}")
        values = dict(data)
        ts = values.get("ts")
        if isinstance(ts, str):
            try:
                ts = datetime.fromisoformat(ts.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f"ts must be ISO 8601 (e.g. 2024-05-01T12:00:00Z); got {ts!r}") from None
        values["ts"] = to_epoch(ts)
        if "client_event_id" not in values or "kind" not in values:
            raise ValueError("an event needs client_event_id and kind")
        return cls(**values)


@dataclass(frozen=True, kw_only=True)
class ExposureIn:
    """One exposure to record: a unit saw the image set of its variant of ``experiment`` at ``ts``."""

    unit_id: str
    ts: float
    user_id: str | None = None
    session_id: str | None = None
    bundle_version: str | None = None
    image_ids: tuple[str, ...] = ()
    exposure_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        _check_id("unit_id", self.unit_id, required=True)
        _check_id("exposure_id", self.exposure_id, required=True)
        for name in ("user_id", "session_id", "bundle_version"):
            _check_id(name, getattr(self, name))
        object.__setattr__(self, "ts", to_epoch(self.ts))
        object.__setattr__(self, "image_ids", tuple(self.image_ids))


@dataclass(frozen=True)
class AddResult:
    """What :meth:`EventStore.add_events` did with each event, in input order (True = newly stored)."""

    new: tuple[bool, ...]

    @property
    def stored(self) -> int:
        return sum(self.new)

    @property
    def duplicates(self) -> int:
        return len(self.new) - self.stored


def differences(stored: Event, resent: Event, *, compare_ts: bool = True) -> list[str]:
    """The fields in which ``resent`` (same ``client_event_id``) differs from ``stored``; [] for a true resend.

    ``compare_ts=False`` leaves the time out: an event sent without ``ts`` is stamped on arrival, so its resend
    arrives with another time and is still the same event.
    """
    fields = PAYLOAD_FIELDS + (("ts",) if compare_ts else ())
    return [f for f in fields if getattr(stored, f) != getattr(resent, f)]


class EventConflict(ValueError):
    """Events reuse a stored ``client_event_id`` (or one earlier in their batch) with another payload: the client
    has two events under one id, and storing either silently would lose the other. ``errors`` holds (index,
    client_event_id, message) each; nothing of the batch was stored."""

    def __init__(self, errors: list[tuple[int, str, str]], total: int) -> None:
        self.errors = errors
        self.total = total
        first = "; ".join(f"events[{i}]: {msg}" for i, _, msg in errors[:3])
        super().__init__(
            f"{len(errors)} of {total} events reuse a client_event_id with a different payload, and nothing was "
            f"stored ({first}{'; …' if len(errors) > 3 else ''}); give each distinct event its own id, or resend "
            "an event exactly as it was first sent"
        )
