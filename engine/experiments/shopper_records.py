"""A shopper's rows in the event store: found, counted and erased; and retention.

:class:`ShopperRecords` is a part of :class:`engine.experiments.eventstore.EventStore` (its base class), kept
apart because it serves privacy (``engine.serving.privacy``), not experiments: every method finds rows by the
shopper's pseudonyms, and by their sessions when those were an experiment's units.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.experiments.tables import assignments_t, events_t, exposures_t


class ShopperRecords:
    """Privacy queries over the store's tables; the store supplies its transactions."""

    _read: Callable[[], AbstractContextManager[Connection]]
    _write: Callable[[], AbstractContextManager[Connection]]

    def _user_rows(self, user_ids: Sequence[str]) -> dict[str, sa.ColumnElement[bool]]:
        ids = list(user_ids)
        sessions = self.user_sessions(ids)
        units = [*ids, *sessions]  # an experiment's unit is the shopper or, by session, their sessions
        return {
            "events": events_t.c.user_id.in_(ids),
            "exposures": sa.or_(exposures_t.c.user_id.in_(ids), exposures_t.c.unit_id.in_(units)),
            "assignments": assignments_t.c.unit_id.in_(units),
        }

    def user_sessions(self, user_ids: Sequence[str]) -> set[str]:
        """The session ids that the shopper's stored events and exposures name."""
        ids = list(user_ids)
        with self._read() as conn:
            found = conn.execute(sa.select(events_t.c.session_id).where(events_t.c.user_id.in_(ids))).scalars()
            shown = conn.execute(sa.select(exposures_t.c.session_id).where(exposures_t.c.user_id.in_(ids))).scalars()
            return {s for s in (*found, *shown) if s}

    def user_traces(self, user_ids: Sequence[str], *, until: float | None = None) -> dict[str, int]:
        """Rows per table that name these shoppers (their pseudonyms), or their sessions as experiment units;
        with ``until`` (epoch seconds), only rows from then or before (what an erasure at ``until`` covered)."""
        tables = {"events": events_t, "exposures": exposures_t, "assignments": assignments_t}
        times = {"events": events_t.c.ts, "exposures": exposures_t.c.ts, "assignments": assignments_t.c.first_ts}
        where = self._user_rows(user_ids)
        with self._read() as conn:
            counts = {}
            for name, cond in where.items():
                if until is not None:
                    cond = sa.and_(cond, times[name] <= until)
                query = sa.select(sa.func.count()).select_from(tables[name]).where(cond)
                counts[name] = int(conn.execute(query).scalar_one())
            return counts

    def forget_users(self, user_ids: Sequence[str]) -> dict[str, int]:
        """Delete every event, exposure and assignment of these shoppers, in one transaction; rows per table."""
        tables = {"events": events_t, "exposures": exposures_t, "assignments": assignments_t}
        where = self._user_rows(user_ids)
        with self._write() as conn:
            return {name: int(conn.execute(tables[name].delete().where(cond)).rowcount) for name, cond in where.items()}

    def delete_before(self, ts: float) -> dict[str, int]:
        """Retention: delete events and exposures older than ``ts`` (epoch seconds); rows per table."""
        with self._write() as conn:
            events = conn.execute(events_t.delete().where(events_t.c.ts < ts)).rowcount
            exposures = conn.execute(exposures_t.delete().where(exposures_t.c.ts < ts)).rowcount
        return {"events": int(events), "exposures": int(exposures)}
