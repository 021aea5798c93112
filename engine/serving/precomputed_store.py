"""Where precomputed image sets are kept: a SQLite file under the artifacts folder, or Redis.

A batch job (``vitrine batch image-sets``) renders every known shopper's set after a promotion and writes it here;
the API reads here first (:mod:`engine.serving.precomputed`). An entry is keyed by

- the bundle version that made it: a promotion switches the version, so the old version's entries are no longer
  asked for (and the job prunes them);
- the shopper's pseudonym (never a shop's own id): erasure deletes every entry of a shopper, whatever the version;
- the request parameters that change the set (``precomputed.SetParams.key``: n, neighbours, filters, and a digest
  of the Personaliser's generation settings).

Its value is the encoded set (``precomputed.encode_set``), a few kilobytes. :class:`SqlitePrecomputedStore` is the
default, for one host: the job and every worker share the file (WAL: readers never wait for the job's writes).
:class:`RedisPrecomputedStore` is for several hosts, with ``VITRINE_REDIS_URL``. Both raise
:class:`PrecomputedStoreUnavailable` when they cannot answer; serving then makes the set afresh.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import redis

from engine.serving import redis_client

logger = logging.getLogger(__name__)

#: The SQLite file, relative to the artifacts root.
SQLITE_PATH = Path("precomputed") / "image-sets.sqlite"
_SQLITE_SCHEMA = 1  # PRAGMA user_version of the file: a later layout bumps it, with a migration
MONTH_SECONDS = 30 * 86_400


class PrecomputedStoreUnavailable(RuntimeError):
    """The store of precomputed sets did not answer (a locked or unreadable file, a Redis that is down)."""


class PrecomputedStore(Protocol):
    """Encoded image sets by (bundle version, shopper pseudonym, parameters key)."""

    def put_many(self, version: str, entries: Iterable[tuple[str, str, bytes]]) -> int:
        """Store (shopper, params key, payload) entries of ``version``, replacing any held; how many."""
        ...

    def get(self, version: str, shopper: str, params: str) -> bytes | None:
        """The payload stored for this key, or None."""
        ...

    def delete_shoppers(self, shoppers: list[str]) -> int:
        """Delete every entry of these shoppers, in every version (erasure, a session event); how many."""
        ...

    def count(self, version: str | None = None, shoppers: list[str] | None = None) -> int:
        """How many entries are held: of ``version`` (None: all), of ``shoppers`` (None: everyone)."""
        ...

    def prune(self, keep: set[str]) -> int:
        """Delete the entries of every version not in ``keep``; how many."""
        ...


class SqlitePrecomputedStore:
    """Precomputed sets in one SQLite file, shared by the batch job and every worker on the host.

    The file is created by the first write; until then reads answer None and deletions 0, so an API without a
    job behind it creates nothing. One connection per store, used under a lock; WAL journal, so a worker reads
    while the job writes. ``timeout_seconds`` bounds how long a write waits for another writer's lock.
    """

    def __init__(self, path: Path, *, timeout_seconds: float = 2.0) -> None:
        self.path = Path(path)
        self.timeout_seconds = timeout_seconds
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    @classmethod
    def under(cls, artifacts: Path, **kwargs: Any) -> SqlitePrecomputedStore:
        """The store of an artifacts root: ``<artifacts>/precomputed/image-sets.sqlite``."""
        return cls(Path(artifacts) / SQLITE_PATH, **kwargs)

    @property
    def where(self) -> str:
        return f"SQLite file {self.path}"

    def _connection(self, *, create: bool) -> sqlite3.Connection | None:
        if self._conn is not None:
            return self._conn
        if not create and not self.path.exists():
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self.timeout_seconds, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        found = conn.execute("PRAGMA user_version").fetchone()[0]
        if found == 0:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS image_sets (shopper TEXT NOT NULL, version TEXT NOT NULL, "
                "params TEXT NOT NULL, payload BLOB NOT NULL, written_at REAL NOT NULL, "
                "PRIMARY KEY (shopper, version, params)) WITHOUT ROWID"
            )
            conn.execute(f"PRAGMA user_version={_SQLITE_SCHEMA}")
        elif found != _SQLITE_SCHEMA:
            conn.close()
            raise ValueError(
                f"{self.path} has layout {found}, this version reads {_SQLITE_SCHEMA}; delete it and run "
                "`vitrine batch image-sets` again"
            )
        self._conn = conn
        return conn

    def _run(self, what: str, fn: Any, *, create: bool = False, empty: Any = None) -> Any:
        with self._lock:
            try:
                conn = self._connection(create=create)
                return empty if conn is None else fn(conn)
            except sqlite3.Error as exc:
                raise PrecomputedStoreUnavailable(f"could not {what} in {self.where}: {exc}") from exc

    def put_many(self, version: str, entries: Iterable[tuple[str, str, bytes]]) -> int:
        now = time.time()
        rows = [(shopper, version, params, payload, now) for shopper, params, payload in entries]
        if not rows:
            return 0

        def write(conn: sqlite3.Connection) -> int:
            with conn:  # one transaction for the batch
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany("INSERT OR REPLACE INTO image_sets VALUES (?, ?, ?, ?, ?)", rows)
            return len(rows)

        return int(self._run("store precomputed sets", write, create=True))

    def get(self, version: str, shopper: str, params: str) -> bytes | None:
        def read(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT payload FROM image_sets WHERE shopper = ? AND version = ? AND params = ?",
                (shopper, version, params),
            ).fetchone()
            return None if row is None else bytes(row[0])

        result: bytes | None = self._run("read a precomputed set", read)
        return result

    def delete_shoppers(self, shoppers: list[str]) -> int:
        if not shoppers:
            return 0

        def delete(conn: sqlite3.Connection) -> int:
            marks = ",".join("?" * len(shoppers))
            # look first: a session event asks this of every shopper, and most hold nothing to delete
            if conn.execute(f"SELECT 1 FROM image_sets WHERE shopper IN ({marks}) LIMIT 1", shoppers).fetchone():
                return conn.execute(f"DELETE FROM image_sets WHERE shopper IN ({marks})", shoppers).rowcount
            return 0

        return int(self._run("delete precomputed sets", delete, empty=0))

    def count(self, version: str | None = None, shoppers: list[str] | None = None) -> int:
        where, args = [], []
        if version is not None:
            where.append("version = ?")
            args.append(version)
        if shoppers is not None:
            where.append(f"shopper IN ({','.join('?' * len(shoppers))})")
            args.extend(shoppers)
        sql = "SELECT COUNT(*) FROM image_sets" + (" WHERE " + " AND ".join(where) if where else "")
        if shoppers == []:
            return 0
        return int(self._run("count precomputed sets", lambda c: c.execute(sql, args).fetchone()[0], empty=0))

    def prune(self, keep: set[str]) -> int:
        kept = sorted(keep)
        sql = "DELETE FROM image_sets" + (f" WHERE version NOT IN ({','.join('?' * len(kept))})" if kept else "")
        return int(self._run("prune precomputed sets", lambda c: c.execute(sql, kept).rowcount, empty=0))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class RedisPrecomputedStore:
    """Precomputed sets in Redis, for several hosts: one hash per shopper, ``<prefix><shopper>``, whose fields are
    ``<version>|<params key>`` and values the payloads.

    One key per shopper makes erasure one DEL whatever the versions; the key expires ``ttl_seconds`` after the
    shopper's last write (30 days by default), so a shopper the job no longer renders does not stay for ever.
    """

    def __init__(
        self, client: redis.Redis, *, prefix: str = "vitrine:precomputed:", ttl_seconds: int = MONTH_SECONDS
    ) -> None:
        if ttl_seconds < 1:
            raise ValueError(f"ttl_seconds must be at least 1; got {ttl_seconds}")
        self.client = client
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds

    @classmethod
    def from_url(cls, url: str, *, timeout_seconds: float = 0.5, **kwargs: Any) -> RedisPrecomputedStore:
        """A store on the Redis at ``url``; each command waits at most ``timeout_seconds``. ValueError when ``url``
        is not a Redis URL."""
        return cls(redis_client.connect(url, timeout_seconds=timeout_seconds), **kwargs)

    @property
    def where(self) -> str:
        return redis_client.describe(self.client)

    def problem(self) -> str | None:
        """None when Redis answers, else what went wrong."""
        return redis_client.problem(self.client)

    def _field(self, version: str, params: str) -> str:
        return f"{version}|{params}"

    def _call(self, what: str, fn: Any) -> Any:
        try:
            return fn()
        except redis.RedisError as exc:
            raise PrecomputedStoreUnavailable(f"could not {what} in {self.where}: {exc}") from exc

    def put_many(self, version: str, entries: Iterable[tuple[str, str, bytes]]) -> int:
        pipe = self.client.pipeline(transaction=False)
        n = 0
        for shopper, params, payload in entries:
            pipe.hset(self.prefix + shopper, self._field(version, params), payload)
            pipe.expire(self.prefix + shopper, self.ttl_seconds)
            n += 1
        if n:
            self._call("store precomputed sets", pipe.execute)
        return n

    def get(self, version: str, shopper: str, params: str) -> bytes | None:
        raw = self._call(
            "read a precomputed set", lambda: self.client.hget(self.prefix + shopper, self._field(version, params))
        )
        return raw if isinstance(raw, bytes) else None

    def delete_shoppers(self, shoppers: list[str]) -> int:
        if not shoppers:
            return 0
        keys = [self.prefix + s for s in shoppers]

        def delete() -> int:
            pipe = self.client.pipeline(transaction=True)
            for key in keys:
                pipe.hlen(key)
            pipe.delete(*keys)
            return sum(int(n) for n in pipe.execute()[:-1])

        return int(self._call("delete precomputed sets", delete))

    def _fields(self, shoppers: list[str] | None) -> Iterator[tuple[str, list[str]]]:
        """(key, its fields) of these shoppers, or of every shopper the store holds, read 1,000 keys a round trip."""
        keys: Iterable[Any] = (
            [self.prefix + s for s in shoppers]
            if shoppers is not None
            else self.client.scan_iter(match=_glob_escape(self.prefix) + "*", count=1000)
        )
        chunk: list[str] = []
        for key in itertools.chain(keys, [None]):
            if key is not None:
                chunk.append(_text(key))
            if chunk and (key is None or len(chunk) == 1000):
                pipe = self.client.pipeline(transaction=False)
                for k in chunk:
                    pipe.hkeys(k)
                yield from zip(chunk, [[_text(f) for f in fields] for fields in pipe.execute()], strict=True)
                chunk = []

    def count(self, version: str | None = None, shoppers: list[str] | None = None) -> int:
        def count() -> int:
            return sum(
                1
                for _, fields in self._fields(shoppers)
                for f in fields
                if version is None or f.split("|", 1)[0] == version
            )

        return int(self._call("count precomputed sets", count))

    def prune(self, keep: set[str]) -> int:
        def prune() -> int:
            dropped, pipe, queued = 0, self.client.pipeline(transaction=False), 0
            for key, fields in self._fields(None):
                old = [f for f in fields if f.split("|", 1)[0] not in keep]
                if old:
                    pipe.hdel(key, *old)
                    queued += 1
                if queued == 1000:
                    dropped += sum(int(n) for n in pipe.execute())
                    queued = 0
            return dropped + sum(int(n) for n in pipe.execute())

        return int(self._call("prune precomputed sets", prune))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def open_precomputed_store(
    artifacts: Path, redis_url: str | None = None, *, redis_prefix: str = redis_client.DEFAULT_PREFIX
) -> PrecomputedStore:
    """The store serving reads and the batch job writes: Redis with ``redis_url`` (under
    ``<redis_prefix>precomputed:``), else the SQLite file under ``artifacts``. A URL that is not a Redis URL is a
    ValueError; a Redis that does not answer now is logged and kept (sets are made afresh until it answers)."""
    if not redis_url:
        return SqlitePrecomputedStore.under(artifacts)
    store = RedisPrecomputedStore.from_url(redis_url, prefix=redis_client.check_prefix(redis_prefix) + "precomputed:")
    if problem := store.problem():
        logger.error("precomputed image sets: %s; sets are made afresh until it answers", problem)
    return store
