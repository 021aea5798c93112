"""The event store's tables: the migrations that create them, and the current schema that queries use.

Schema changes are migrations (:data:`MIGRATIONS`), applied in order when a store opens
(:func:`engine.experiments.database.migrate`) and recorded in ``schema_migrations``; ``docs/EXPERIMENTS.md``
says how to add one. The current-schema tables below must match the result of applying every migration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from features.ids import MAX_ID_LENGTH


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


def _ids(*names: str, primary_key: bool = False) -> list[sa.Column]:
    """Id columns: strings of at most MAX_ID_LENGTH characters, the length records.Event and ExposureIn accept."""
    return [sa.Column(name, sa.String(MAX_ID_LENGTH), primary_key=primary_key) for name in names]


def _times(*names: str) -> list[sa.Column]:
    """Time columns: UTC epoch seconds."""
    return [sa.Column(name, sa.Double) for name in names]


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
    *_ids("name", primary_key=True),
    sa.Column("config", sa.Text),
    *_times("created_at", "updated_at"),
)
assignments_t = sa.Table(
    "assignments", _md, *_ids("experiment", "unit_id", primary_key=True), *_ids("variant"), *_times("first_ts")
)
exposures_t = sa.Table(
    "exposures",
    _md,
    sa.Column("id", sa.BigInteger, primary_key=True),
    *_ids("exposure_id", "experiment", "variant", "unit_id", "user_id", "session_id", "bundle_version"),
    sa.Column("image_ids", sa.Text),
    *_times("ts"),
)
events_t = sa.Table(
    "events",
    _md,
    sa.Column("id", sa.BigInteger, primary_key=True),
    *_ids("client_event_id"),
    sa.Column("kind", sa.String(16)),
    *_ids("user_id", "session_id", "item_id", "image_id"),
    sa.Column("revenue", sa.Double),
    *_times("ts", "received_at"),
)
