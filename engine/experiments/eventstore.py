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

Schema changes are migrations (:data:`MIGRATIONS`), applied in order when a store opens and recorded in
``schema_migrations``; ``docs/EXPERIMENTS.md`` says how to add one.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import StaticPool

logger = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///data/events.db"
#: Event kinds. view / add_to_cart / purchase name a catalogue item; a click names an image (and maybe its item).
EVENT_KINDS: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase")
ITEM_KINDS: tuple[str, ...] = ("view", "add_to_cart", "purchase")
MAX_ID_LENGTH = 128
_CHUNK = 400  # unit ids per `IN (...)` lookup (SQLite allows 32766 bound parameters per statement)


class StoreError(RuntimeError):
    """The database cannot be used as an event store (for example, its schema is newer than this code)."""


# ---------------------------------------------------------------------------------------------------- records


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


# ------------------------------------------------------------------------------------------------ migrations


@dataclass(frozen=True)
class Migration:
    """A schema change. ``upgrade`` runs inside the transaction that records it in ``schema_migrations``."""

    version: int
    name: str
    upgrade: Callable[[Connection], None]


def _v1_initial(conn: Connection) -> None:
    # The tables as they were at version 1, written out here (not taken from the current-schema objects below)
    # so that this migration stays the same when a later one changes a table.
    md = sa.MetaData()
    sa.Table(
        "experiments",
        md,
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
    )
    sa.Table(
        "assignments",
        md,
        sa.Column("experiment", sa.String(128), primary_key=True),
        sa.Column("unit_id", sa.String(128), primary_key=True),
        sa.Column("variant", sa.String(128), nullable=False),
        sa.Column("first_ts", sa.Double, nullable=False),
    )
    sa.Table(
        "exposures",
        md,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("exposure_id", sa.String(128), nullable=False, unique=True),
        sa.Column("experiment", sa.String(128), nullable=False),
        sa.Column("variant", sa.String(128), nullable=False),
        sa.Column("unit_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128)),
        sa.Column("session_id", sa.String(128)),
        sa.Column("bundle_version", sa.String(128)),
        sa.Column("image_ids", sa.Text, nullable=False),
        sa.Column("ts", sa.Double, nullable=False),
        sa.Index("ix_exposures_experiment_unit", "experiment", "unit_id"),
    )
    sa.Table(
        "events",
        md,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("client_event_id", sa.String(128), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("user_id", sa.String(128)),
        sa.Column("session_id", sa.String(128)),
        sa.Column("item_id", sa.String(128)),
        sa.Column("image_id", sa.String(128)),
        sa.Column("revenue", sa.Double),
        sa.Column("ts", sa.Double, nullable=False),
        sa.Column("received_at", sa.Double, nullable=False),
        sa.Index("ix_events_user_ts", "user_id", "ts"),
        sa.Index("ix_events_session_ts", "session_id", "ts"),
    )
    md.create_all(conn)


#: Applied in order at open; append new ones (never edit an applied one). See docs/EXPERIMENTS.md.
MIGRATIONS: tuple[Migration, ...] = (Migration(1, "experiments, assignments, exposures, events", _v1_initial),)

# The current schema, for queries (must match the result of applying every migration).
_md = sa.MetaData()
schema_migrations = sa.Table(
    "schema_migrations",
    _md,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("applied_at", sa.Double, nullable=False),
)
experiments_t = sa.Table(
    "experiments",
    _md,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("config", sa.Text),
    sa.Column("created_at", sa.Double),
    sa.Column("updated_at", sa.Double),
)
assignments_t = sa.Table(
    "assignments",
    _md,
    sa.Column("experiment", sa.String(128), primary_key=True),
    sa.Column("unit_id", sa.String(128), primary_key=True),
    sa.Column("variant", sa.String(128)),
    sa.Column("first_ts", sa.Double),
)
exposures_t = sa.Table(
    "exposures",
    _md,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("exposure_id", sa.String(128)),
    sa.Column("experiment", sa.String(128)),
    sa.Column("variant", sa.String(128)),
    sa.Column("unit_id", sa.String(128)),
    sa.Column("user_id", sa.String(128)),
    sa.Column("session_id", sa.String(128)),
    sa.Column("bundle_version", sa.String(128)),
    sa.Column("image_ids", sa.Text),
    sa.Column("ts", sa.Double),
)
events_t = sa.Table(
    "events",
    _md,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("client_event_id", sa.String(128)),
    sa.Column("kind", sa.String(16)),
    sa.Column("user_id", sa.String(128)),
    sa.Column("session_id", sa.String(128)),
    sa.Column("item_id", sa.String(128)),
    sa.Column("image_id", sa.String(128)),
    sa.Column("revenue", sa.Double),
    sa.Column("ts", sa.Double),
    sa.Column("received_at", sa.Double),
)


# ------------------------------------------------------------------------------------------------------ store


class EventStore:
    """Experiments, assignments, exposures and events in one database (see the module docstring).

    Thread-safe: each call takes a pooled connection. Open with a URL; migrations run at open. ``close()``
    (or use as a context manager) releases the connections.
    """

    def __init__(self, url: str = DEFAULT_URL, *, busy_timeout_s: float = 30.0, echo: bool = False) -> None:
        self.url = url
        self._engine = _create_engine(url, busy_timeout_s=busy_timeout_s, echo=echo)
        self.backend = self._engine.dialect.name
        # an in-memory SQLite database is one shared connection: take turns on it
        self._lock: AbstractContextManager[Any] = (
            threading.RLock() if isinstance(self._engine.pool, StaticPool) else nullcontext()
        )
        try:
            self.schema_version = _migrate(self._engine, self.backend)
        except sa.exc.OperationalError as exc:
            self._engine.dispose()
            raise StoreError(f"cannot open the event store at {_redact(url)}: {exc.orig}") from exc
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
        return f"EventStore({_redact(self.url)!r}, schema_version={self.schema_version})"

    # -- transactions

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._lock, self._engine.connect().execution_options(vitrine_write=True) as conn, conn.begin():
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._lock, self._engine.connect() as conn, conn.begin():
            yield conn

    def _insert(self, table: sa.Table):
        return (sqlite.insert if self.backend == "sqlite" else postgresql.insert)(table)

    # -- events

    def add_events(self, events: Iterable[Event]) -> AddResult:
        """Store events, ignoring any whose ``client_event_id`` is already stored (in the database or earlier
        in this batch). Returns, per event in input order, whether it was new. One transaction."""
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
            return [_event(row) for row in conn.execute(query).mappings()]

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
                sa.func.coalesce(
                    sa.func.sum(sa.case((sa.and_(e.c.kind == "purchase", after), e.c.revenue))), 0.0
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


def _event(row: sa.RowMapping) -> Event:
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


# ----------------------------------------------------------------------------------------- engine and migrate


def _create_engine(url: str, *, busy_timeout_s: float, echo: bool) -> Engine:
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        in_memory = database in ("", ":memory:")
        if not in_memory:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            parsed,
            echo=echo,
            connect_args={"check_same_thread": False, "timeout": busy_timeout_s},
            **({"poolclass": StaticPool} if in_memory else {}),
        )

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # the driver stops issuing BEGIN; _on_begin below does
            cursor = dbapi_conn.cursor()
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # A writer takes the write lock at BEGIN, so it waits (busy_timeout) rather than failing with
            # SQLITE_BUSY when it later upgrades a read lock; readers stay deferred and never block in WAL.
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("vitrine_write") else "BEGIN")

        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return sa.create_engine(parsed, echo=echo, pool_pre_ping=True)
    raise ValueError(
        f"unsupported database URL {_redact(url)!r}: use sqlite:///path/to/events.db or "
        "postgresql+psycopg://user@host:5432/database"
    )


def _migrate(engine: Engine, backend: str) -> int:
    """Apply the migrations this database lacks, in one transaction; return the schema version."""
    latest = MIGRATIONS[-1].version
    with engine.connect().execution_options(vitrine_write=True) as conn, conn.begin():
        if backend == "postgresql":  # one migrator at a time across processes
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(7243901)"))
        schema_migrations.create(conn, checkfirst=True)
        applied = set(conn.execute(sa.select(schema_migrations.c.version)).scalars())
        if applied and max(applied) > latest:
            raise StoreError(
                f"the database has schema version {max(applied)}, newer than this code knows ({latest}); "
                "upgrade vitrine, or point VITRINE_DATABASE_URL at another database"
            )
        for migration in MIGRATIONS:
            if migration.version in applied:
                continue
            migration.upgrade(conn)
            conn.execute(
                schema_migrations.insert().values(
                    version=migration.version, name=migration.name, applied_at=datetime.now(UTC).timestamp()
                )
            )
            logger.log(
                logging.DEBUG if isinstance(engine.pool, StaticPool) else logging.INFO,  # quiet in memory
                "event store: applied migration %d (%s)",
                migration.version,
                migration.name,
            )
    return latest


def _redact(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is shown as given: it holds no usable password
        return url
