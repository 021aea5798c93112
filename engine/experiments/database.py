"""Opening an event store database: one SQLAlchemy engine per backend, and its migrations applied.

SQLite files run in WAL mode with writers taking the lock at ``BEGIN`` (see :func:`create_engine`); an
in-memory SQLite database is one connection shared by every thread; PostgreSQL goes through psycopg 3.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import StaticPool

from engine.experiments.tables import MIGRATIONS, schema_migrations

logger = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///data/events.db"


class StoreError(RuntimeError):
    """The database cannot be used as an event store (for example, its schema is newer than this code)."""


class StoreUnavailable(StoreError):
    """The database did not complete a read or a write: the connection was lost, the disk is full, or a lock
    wait timed out. The transaction was rolled back, so nothing of it is stored; retrying later may succeed."""


def create_engine(url: str, *, busy_timeout_s: float, echo: bool) -> Engine:
    """The engine for ``url``: a SQLite file or memory, or PostgreSQL (``postgresql://`` uses psycopg 3)."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        in_memory = database in ("", ":memory:")
        if not in_memory:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            parsed,
            echo=echo,
            hide_parameters=True,  # an error message must not carry a shopper's data into the logs
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
        return sa.create_engine(parsed, echo=echo, pool_pre_ping=True, hide_parameters=True)
    raise ValueError(
        f"unsupported database URL {redact(url)!r}: use sqlite:///path/to/events.db or "
        "postgresql+psycopg://user@host:5432/database"
    )


def migrate(engine: Engine, backend: str) -> int:
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


def without_credentials(url: str) -> str:
    """``url`` with no user name, password or query (which may hold one): what a bundle's manifest may record
    about an event store."""
    try:
        u = sa.engine.make_url(url)
        bare = sa.engine.URL.create(u.drivername, host=u.host, port=u.port, database=u.database)
        return bare.render_as_string(hide_password=True)
    except Exception:  # an unparsable URL cannot be opened either; record only that it was one
        return "<unparsable database URL>"


def redact(url: str) -> str:
    """``url`` with its password hidden, for messages and logs."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is shown as given: it holds no usable password
        return url
