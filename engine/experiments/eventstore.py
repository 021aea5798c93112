"""The event store: experiments, assignments, exposures and shopper events, in SQLite (default) or PostgreSQL.

One :class:`EventStore` wraps a SQLAlchemy engine (Core, no ORM). The URL picks the backend:

- ``sqlite:///data/events.db`` (default): a file in WAL mode, so readers never block the writer and
  several processes can share it; writes take the lock up front (``BEGIN IMMEDIATE``) and wait up to
  ``busy_timeout_s`` for it, so concurrent writers queue instead of failing.
- ``sqlite://``: in memory, one connection shared by every thread (tests and the statistics simulator).
- ``postgresql+psycopg://user@host:5432/db``: PostgreSQL through psycopg 3.

Writes are idempotent. Every event carries a ``client_event_id`` (unique); adding it again is a no-op that
reports ``duplicate``. An exposure's first record for an (experiment, unit) fixes the unit's variant in
``assignments``; later exposures of that unit reuse it (see :func:`EventStore.record_exposures`).

The store's parts live beside it: the records it holds (:mod:`engine.experiments.records`), its tables and
schema migrations (:mod:`engine.experiments.tables`), opening a database and migrating it
(:mod:`engine.experiments.database`), all-or-nothing ingestion of JSON events
(:mod:`engine.experiments.ingest`) and the check that a resent event is the same event
(:mod:`engine.experiments.resends`). Schema changes are migrations (:data:`MIGRATIONS`), applied in order when a
store opens and recorded in ``schema_migrations``; ``docs/EXPERIMENTS.md`` says how to add one.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.pool import StaticPool

from engine.experiments.database import (
    DEFAULT_URL,
    StoreError,
    StoreUnavailable,
    create_engine,
    migrate,
    redact,
    without_credentials,
)
from engine.experiments.ingest import BadEvents, ingest_events
from engine.experiments.records import (
    ITEM_KINDS,
    MAX_ID_LENGTH,
    AddResult,
    Event,
    EventConflict,
    ExposureIn,
    to_epoch,
)
from engine.experiments.resends import conflicts, event_from_row
from engine.experiments.shopper_records import ShopperRecords
from engine.experiments.tables import assignments_t, events_t, experiments_t, exposures_t
from features.readers.service import SERVICE_EVENT_COLUMNS

# Callers import the store's records, errors and ingestion from here, the event store's front door.
__all__ = [
    "MAX_ID_LENGTH",
    "AddResult",
    "BadEvents",
    "Event",
    "EventConflict",
    "EventStore",
    "ExposureIn",
    "StoreError",
    "StoreUnavailable",
    "exposures_t",
    "ingest_events",
    "read_event_log",
    "to_epoch",
]

_CHUNK = 400  # unit ids per `IN (...)` lookup (SQLite allows 32766 bound parameters per statement)
# Revenue is summed as NUMERIC and read back as a float: a sum too large for a float is then inf (which the
# report shows as null) on every backend, where PostgreSQL's float8 sum would fail the query.
_EXACT = sa.Numeric(asdecimal=False)


class EventStore(ShopperRecords):
    """Experiments, assignments, exposures and events in one database (see the module docstring).

    Thread-safe: each call takes a pooled connection. Open with a URL; migrations run at open. ``close()``
    (or use as a context manager) releases the connections.
    """

    def __init__(self, url: str = DEFAULT_URL, *, busy_timeout_s: float = 30.0, echo: bool = False) -> None:
        self.url = url
        self._engine = create_engine(url, busy_timeout_s=busy_timeout_s, echo=echo)
        self.backend = self._engine.dialect.name
        # an in-memory SQLite database is one shared connection: take turns on it
        self._lock: AbstractContextManager[Any] = (
            threading.RLock() if isinstance(self._engine.pool, StaticPool) else nullcontext()
        )
        try:
            self.schema_version = migrate(self._engine, self.backend)
        except sa.exc.OperationalError as exc:
            self._engine.dispose()
            raise StoreError(f"cannot open the event store at {redact(url)}: {exc.orig}") from exc
        except BaseException:
            self._engine.dispose()
            raise

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EventStore({redact(self.url)!r}, schema_version={self.schema_version})"

    # -- transactions

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with (
            _answered("write"),
            self._lock,
            self._engine.connect().execution_options(vitrine_write=True) as conn,
            conn.begin(),
        ):
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with _answered("read"), self._lock, self._engine.connect() as conn, conn.begin():
            yield conn

    def _insert(self, table: sa.Table):
        return (sqlite.insert if self.backend == "sqlite" else postgresql.insert)(table)

    # -- events

    def add_events(self, events: Iterable[Event], *, ts_stated: Sequence[bool] | None = None) -> AddResult:
        """Store events, ignoring any whose ``client_event_id`` is already stored (in the database or earlier
        in this batch) with the same payload. Returns, per event in input order, whether it was new.

        One transaction: when an id comes back with another payload (:func:`records.differences`),
        :class:`EventConflict` names each such event and nothing is stored. ``ts_stated`` (one flag per event;
        default: all) says whether the client gave the time; a time stamped on arrival is not compared.
        """
        events = list(events)
        if not events:
            return AddResult(())
        received = datetime.now(UTC).timestamp()
        rows = [
            {
                "client_event_id": e.client_event_id,
                "kind": e.kind,
                "user_id": e.user_id,
                "session_id": e.session_id,
                "item_id": e.item_id,
                "image_id": e.image_id,
                "revenue": e.revenue,
                "ts": e.ts,
                "received_at": received,
            }
            for e in events
        ]
        stmt = (
            self._insert(events_t)
            .on_conflict_do_nothing(index_elements=["client_event_id"])
            .returning(events_t.c.client_event_id)
        )
        with self._write() as conn:  # executemany: SQLAlchemy batches it into multi-row INSERTs
            inserted = set(conn.execute(stmt, rows).scalars())
            found = conflicts(conn, events, inserted, ts_stated)
            if found:  # raising inside the transaction rolls the whole batch back
                raise EventConflict(found, len(events))
        new = []
        for e in events:  # the first occurrence of an inserted id is the new one; repeats are duplicates
            new.append(e.client_event_id in inserted)
            inserted.discard(e.client_event_id)
        return AddResult(tuple(new))

    def count_events(self, kind: str | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(events_t)
        if kind is not None:
            query = query.where(events_t.c.kind == kind)
        with self._read() as conn:
            return int(conn.execute(query).scalar_one())

    def session_events(self, session_id: str) -> list[Event]:
        """The session's view / add_to_cart / purchase events, oldest first (ties in arrival order): what
        session fold-in needs."""
        query = (
            sa.select(events_t)
            .where(events_t.c.session_id == session_id, events_t.c.kind.in_(ITEM_KINDS))
            .order_by(events_t.c.ts, events_t.c.id)
        )
        with self._read() as conn:
            return [event_from_row(row) for row in conn.execute(query).mappings()]

    def event_log(self) -> pd.DataFrame:
        """Every stored shopper event, in arrival order, as a plain frame with the columns that
        :func:`features.readers.service_events` reads (``row_id`` is the events table's ``id``).

        Values are as stored (``ts`` in UTC epoch seconds, missing ids as None); turning them into training
        events, and rejecting the ones training cannot use, is :func:`features.readers.service_events`' job.
        """
        c = events_t.c
        query = sa.select(
            c.id.label("row_id"), c.client_event_id, c.kind, c.user_id, c.session_id, c.item_id, c.image_id, c.ts
        ).order_by(c.id)
        with self._read() as conn:
            rows = conn.execute(query).all()
        return pd.DataFrame.from_records(rows, columns=list(SERVICE_EVENT_COLUMNS))

    # -- experiments (the registry in engine.experiments wraps these)

    def save_experiment(self, name: str, config: Mapping[str, Any], *, create: bool) -> None:
        """Insert (``create=True``; KeyError if the name exists) or replace (KeyError if it does not)."""
        now = datetime.now(UTC).timestamp()
        text = json.dumps(config, sort_keys=True)
        with self._write() as conn:
            exists = conn.execute(sa.select(experiments_t.c.name).where(experiments_t.c.name == name)).first()
            if create:
                if exists:
                    raise KeyError(f"experiment {name!r} already exists; update it instead")
                conn.execute(experiments_t.insert().values(name=name, config=text, created_at=now, updated_at=now))
            else:
                if not exists:
                    raise KeyError(f"no experiment named {name!r}")
                conn.execute(
                    experiments_t.update().where(experiments_t.c.name == name).values(config=text, updated_at=now)
                )

    def load_experiment(self, name: str) -> dict[str, Any] | None:
        with self._read() as conn:
            text = conn.execute(sa.select(experiments_t.c.config).where(experiments_t.c.name == name)).scalar()
        return None if text is None else json.loads(text)

    def load_experiments(self) -> list[dict[str, Any]]:
        with self._read() as conn:
            texts = conn.execute(sa.select(experiments_t.c.config).order_by(experiments_t.c.name)).scalars()
            return [json.loads(t) for t in texts]

    # -- assignments and exposures

    def record_exposures(
        self, experiment: str, exposures: Sequence[ExposureIn], choose: Callable[[str], str | None]
    ) -> list[str | None]:
        """Record exposures of ``experiment``; return the variant each unit actually got.

        A unit with a recorded assignment keeps it. Otherwise ``choose(unit_id)`` names its variant (or None:
        the unit is not in the experiment, nothing is recorded) and the first exposure records it; when two
        writers race on a new unit, the first to commit wins and both get its variant. An exposure whose
        ``exposure_id`` is already stored is not stored again. One transaction.
        """
        if not exposures:
            return []
        units = sorted({e.unit_id for e in exposures})
        with self._write() as conn:
            recorded = self._assigned(conn, experiment, units)
            fresh: dict[str, tuple[str, float]] = {}
            for e in exposures:  # earliest exposure per new unit
                if e.unit_id in recorded:
                    continue
                chosen = fresh.get(e.unit_id)
                if chosen is None:
                    variant = choose(e.unit_id)
                    if variant is not None:
                        fresh[e.unit_id] = (variant, e.ts)
                elif e.ts < chosen[1]:
                    fresh[e.unit_id] = (chosen[0], e.ts)
            rows = [
                {"experiment": experiment, "unit_id": u, "variant": v, "first_ts": t} for u, (v, t) in fresh.items()
            ]
            if rows:
                conn.execute(
                    self._insert(assignments_t).on_conflict_do_nothing(index_elements=["experiment", "unit_id"]), rows
                )
            if fresh:  # another writer may have won a race: read back what is recorded
                recorded.update(self._assigned(conn, experiment, list(fresh)))
            variants = [recorded.get(e.unit_id) for e in exposures]
            rows = [
                {
                    "exposure_id": e.exposure_id,
                    "experiment": experiment,
                    "variant": v,
                    "unit_id": e.unit_id,
                    "user_id": e.user_id,
                    "session_id": e.session_id,
                    "bundle_version": e.bundle_version,
                    "image_ids": json.dumps(list(e.image_ids)),
                    "ts": e.ts,
                }
                for e, v in zip(exposures, variants, strict=True)
                if v is not None
            ]
            if rows:
                conn.execute(self._insert(exposures_t).on_conflict_do_nothing(index_elements=["exposure_id"]), rows)
        return variants

    def _assigned(self, conn: Connection, experiment: str, units: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for start in range(0, len(units), _CHUNK):
            query = sa.select(assignments_t.c.unit_id, assignments_t.c.variant).where(
                assignments_t.c.experiment == experiment, assignments_t.c.unit_id.in_(units[start : start + _CHUNK])
            )
            out.update({u: v for u, v in conn.execute(query)})
        return out

    def assignment(self, experiment: str, unit_id: str) -> str | None:
        """The variant recorded for a unit (None if it was never exposed)."""
        with self._read() as conn:
            return self._assigned(conn, experiment, [unit_id]).get(unit_id)

    def count_exposures(self, experiment: str) -> dict[str, int]:
        """Exposure records per variant (every exposure, not distinct units)."""
        query = (
            sa.select(exposures_t.c.variant, sa.func.count())
            .where(exposures_t.c.experiment == experiment)
            .group_by(exposures_t.c.variant)
        )
        with self._read() as conn:
            return {v: int(n) for v, n in conn.execute(query)}

    def unit_outcomes(
        self,
        experiment: str,
        *,
        unit: str,
        conversion: str,
        as_of: float,
        pre_period_s: float,
        start: float,
    ) -> list[dict[str, Any]]:
        """Per exposed unit (first exposure at or before ``as_of``): its variant, first exposure time, number
        of exposures, the time of its first ``conversion`` event after its first exposure (or None),
        its conversions, clicks and revenue in [first exposure, as_of], and its conversions in the
        pre-period [start - pre_period_s, start) — the CUPED covariate.

        Events are matched to units through ``user_id`` (unit "user") or ``session_id`` (unit "session").
        """
        if unit not in ("user", "session"):
            raise ValueError(f"unit must be user or session; got {unit!r}")
        key = events_t.c.user_id if unit == "user" else events_t.c.session_id
        a, e = assignments_t, events_t
        after = sa.and_(e.c.ts >= a.c.first_ts, e.c.ts <= as_of)
        is_conv = sa.and_(e.c.kind == conversion, after)
        pre = sa.and_(e.c.kind == conversion, e.c.ts >= start - pre_period_s, e.c.ts < start)
        query = (
            sa.select(
                a.c.unit_id,
                a.c.variant,
                a.c.first_ts,
                sa.func.min(sa.case((is_conv, e.c.ts))).label("first_conversion_ts"),
                sa.func.count(sa.case((is_conv, 1))).label("conversions"),
                sa.func.count(sa.case((sa.and_(e.c.kind == "click", after), 1))).label("clicks"),
                sa.func.coalesce(  # summed as NUMERIC: float8 sums overflow with an error in PostgreSQL
                    sa.func.sum(sa.cast(sa.case((sa.and_(e.c.kind == "purchase", after), e.c.revenue)), _EXACT)), 0
                ).label("revenue"),
                sa.func.count(sa.case((pre, 1))).label("pre_conversions"),
            )
            .select_from(a.outerjoin(e, key == a.c.unit_id))
            .where(a.c.experiment == experiment, a.c.first_ts <= as_of)
            .group_by(a.c.unit_id, a.c.variant, a.c.first_ts)
            .order_by(a.c.first_ts, a.c.unit_id)
        )
        counts = (
            sa.select(exposures_t.c.unit_id, sa.func.count().label("n"))
            .where(exposures_t.c.experiment == experiment, exposures_t.c.ts <= as_of)
            .group_by(exposures_t.c.unit_id)
        )
        with self._read() as conn:
            rows = [dict(r) for r in conn.execute(query).mappings()]
            n_exposures = {u: int(n) for u, n in conn.execute(counts)}
        for r in rows:
            r["exposures"] = n_exposures.get(r["unit_id"], 0)
        return rows


@contextmanager
def _answered(action: str) -> Iterator[None]:
    """Turn the database failing mid-transaction (connection lost, disk full, lock wait timed out) into
    :class:`StoreUnavailable`; the transaction around it has been rolled back by then."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        if not (isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError) or exc.connection_invalidated):
            raise
        raise StoreUnavailable(f"the event store could not {action}: {str(exc.orig).strip()}") from exc


def read_event_log(url: str) -> pd.DataFrame:
    """The shopper events of the event store at ``url`` (see :meth:`EventStore.event_log`).

    Reading must not create a store: a SQLite URL naming a file that does not exist is an error (opening one
    would create an empty database and train on nothing from it).
    """
    parsed = sa.engine.make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() == "sqlite" and database not in ("", ":memory:") and not Path(database).is_file():
        raise FileNotFoundError(
            f"no event store at {without_credentials(url)}: {database} does not exist (the API "
            "writes it at VITRINE_DATABASE_URL, default sqlite:///data/events.db)"
        )
    with EventStore(url) as store:
        return store.event_log()
