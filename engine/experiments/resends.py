"""Resent events: an event's ``client_event_id`` makes resending it safe, so a resend must be the same event.

:func:`conflicts` compares each event of a batch whose id was stored before (or came earlier in the batch) with
what was first sent (:func:`records.differences`); :meth:`EventStore.add_events` calls it inside the batch's
transaction and rolls the batch back when anything differs.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.experiments.records import Event, differences
from engine.experiments.tables import events_t

_CHUNK = 400  # ids per `IN (...)` lookup (SQLite allows 32766 bound parameters per statement)


def event_from_row(row: sa.RowMapping) -> Event:
    """An events-table row as the :class:`Event` it stores."""
    return Event(
        client_event_id=row["client_event_id"],
        kind=row["kind"],
        ts=row["ts"],
        user_id=row["user_id"],
        session_id=row["session_id"],
        item_id=row["item_id"],
        image_id=row["image_id"],
        revenue=row["revenue"],
    )


def conflicts(
    conn: Connection, events: Sequence[Event], inserted: set[str], ts_stated: Sequence[bool] | None
) -> list[tuple[int, str, str]]:
    """(index, id, what differs) for each event whose id came before (stored, or earlier in ``events``) with
    another payload. ``inserted``: the ids this batch has just stored; ``ts_stated``: per event, whether the
    client gave its time (None: all did)."""
    first: dict[str, Event] = {}
    repeats: list[int] = []
    for i, e in enumerate(events):
        if e.client_event_id in first or e.client_event_id not in inserted:
            repeats.append(i)
        else:
            first[e.client_event_id] = e
    if not repeats:
        return []
    ids = sorted({events[i].client_event_id for i in repeats} - set(first))
    for start in range(0, len(ids), _CHUNK):
        query = sa.select(events_t).where(events_t.c.client_event_id.in_(ids[start : start + _CHUNK]))
        first.update({row["client_event_id"]: event_from_row(row) for row in conn.execute(query).mappings()})
    found = []
    for i in repeats:
        e = events[i]
        changed = differences(first.setdefault(e.client_event_id, e), e, compare_ts=ts_stated is None or ts_stated[i])
        if changed:
            found.append(
                (
                    i,
                    e.client_event_id,
                    f"client_event_id {e.client_event_id!r} was sent before with another {', '.join(changed)}",
                )
            )
    return found
