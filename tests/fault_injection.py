"""Faults that tests inject: an event store whose database went away, SQLite's size limit reached, a real file
system that is full. Shared by the engine's and the API's fault tests."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine.experiments.eventstore import EventStore


class FailingStore:
    """The real event store, but the methods named in ``failing`` raise what a database that went away raises."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.failing: set[str] = set()

    def __getattr__(self, name: str):
        if name in self.failing:

            def lost(*args, **kwargs):
                raise sa.exc.OperationalError(f"{name}(...)", {}, sqlite3.OperationalError("disk I/O error"))

            return lost
        return getattr(self.store, name)


@contextmanager
def pages_capped(store: EventStore):
    """SQLite's own limit on the database's size (``PRAGMA max_page_count``) held at its size now: a write that
    needs another page fails with SQLITE_FULL, "database or disk is full", through the real transaction path,
    as on a full disk. Yields a function that lifts the limit; it is lifted on exit in any case."""

    def cap(dbapi_conn, _record, _proxy):
        cursor = dbapi_conn.cursor()
        pages = cursor.execute("PRAGMA page_count").fetchone()[0]
        cursor.execute(f"PRAGMA max_page_count={pages}")
        cursor.close()

    def lift() -> None:
        if sa.event.contains(store._engine, "checkout", cap):
            sa.event.remove(store._engine, "checkout", cap)
            store._engine.dispose()  # fresh connections, without the limit

    sa.event.listen(store._engine, "checkout", cap)
    try:
        yield lift
    finally:
        lift()


@contextmanager
def tiny_filesystem(size: str = "512k"):
    """A real file system of ``size`` (tmpfs), mounted for the test; skips, saying why, where mounting is not
    allowed (it needs root)."""
    mount = Path(tempfile.mkdtemp(prefix="vitrine-full-"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        mount.rmdir()
        pytest.skip(f"cannot mount a tiny tmpfs here ({done.stderr.decode().strip() or 'mount failed'}); needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        mount.rmdir()


def fill(mount: Path) -> Path:
    """Fill the file system to the last byte; return the filler file (delete it to make room)."""
    filler = mount / "filler"
    with open(filler, "wb") as fh, suppress(OSError):
        fh.write(b"\0" * (os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize))
    assert os.statvfs(mount).f_bavail == 0
    return filler
