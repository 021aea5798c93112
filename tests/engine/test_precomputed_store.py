"""Stores of precomputed image sets against :mod:`tests.engine.precomputed_store_contract`: the SQLite file (the
default) and Redis (the ``redis_url`` fixture: skipped, saying why, when it does not answer)."""

import sqlite3

import pytest

from engine.serving.precomputed_store import (
    SQLITE_PATH,
    PrecomputedStoreUnavailable,
    RedisPrecomputedStore,
    SqlitePrecomputedStore,
    open_precomputed_store,
)
from tests.engine.precomputed_store_contract import PARAMS, PrecomputedStoreContract


class TestSqlitePrecomputedStore(PrecomputedStoreContract):
    @pytest.fixture(autouse=True)
    def _in_a_folder(self, tmp_path):
        self.root = tmp_path

    def make(self) -> SqlitePrecomputedStore:
        return SqlitePrecomputedStore.under(self.root)

    def test_reading_and_deleting_create_no_file_only_a_write_does(self):
        store = self.make()
        assert store.get("v1", "ps1-a", PARAMS) is None and store.delete_shoppers(["ps1-a"]) == 0
        assert not (self.root / SQLITE_PATH).exists()
        store.put_many("v1", [("ps1-a", PARAMS, b"x")])
        assert (self.root / SQLITE_PATH).is_file()

    def test_a_second_process_reads_what_the_job_wrote(self):
        reader = self.make()  # an API worker that started before the job made the file
        assert reader.get("v1", "ps1-a", PARAMS) is None
        self.make().put_many("v1", [("ps1-a", PARAMS, b"x")])
        assert reader.get("v1", "ps1-a", PARAMS) == b"x"

    def test_a_file_of_another_layout_is_refused_saying_what_to_do(self):
        path = self.root / SQLITE_PATH
        path.parent.mkdir(parents=True)
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA user_version=99")
        with pytest.raises(ValueError, match="delete it and run `vitrine batch image-sets`"):
            self.make().get("v1", "ps1-a", PARAMS)

    def test_a_file_that_is_not_sqlite_is_unavailable_not_an_error(self):
        path = self.root / SQLITE_PATH
        path.parent.mkdir(parents=True)
        path.write_bytes(b"not a database" * 100)
        with pytest.raises(PrecomputedStoreUnavailable, match="could not"):
            self.make().get("v1", "ps1-a", PARAMS)


class TestRedisPrecomputedStore(PrecomputedStoreContract):
    """Each test writes under a key prefix of its own (the ``redis_prefix`` fixture), deleted afterwards."""

    @pytest.fixture(autouse=True)
    def _on_the_test_redis(self, redis_url, redis_prefix):
        self.url, self.prefix = redis_url, redis_prefix

    def make(self, *, ttl_seconds: int = 3600) -> RedisPrecomputedStore:
        return RedisPrecomputedStore.from_url(self.url, prefix=self.prefix, ttl_seconds=ttl_seconds)

    def test_a_shoppers_entries_expire_their_ttl_after_the_last_write(self):
        store = self.make(ttl_seconds=100)
        store.put_many("v1", [("ps1-a", PARAMS, b"x")])
        assert 0 < store.client.pttl(f"{self.prefix}ps1-a") <= 100_000

    def test_open_precomputed_store_follows_the_redis_url(self, tmp_path):
        assert isinstance(open_precomputed_store(tmp_path), SqlitePrecomputedStore)
        assert isinstance(open_precomputed_store(tmp_path, self.url), RedisPrecomputedStore)


def test_a_redis_that_does_not_answer_is_unavailable_not_empty():
    store = RedisPrecomputedStore.from_url("redis://127.0.0.1:1/0")
    with pytest.raises(PrecomputedStoreUnavailable, match="could not read"):
        store.get("v1", "ps1-a", PARAMS)
