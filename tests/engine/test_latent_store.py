"""Latent stores against the contract in :mod:`tests.engine.latent_store_contract`: the in-process one, and the
Redis one on the test Redis (the ``redis_url`` fixture: skipped, saying why, when it does not answer)."""

import numpy as np
import pytest

from engine.serving.latents import (
    LatentStoreUnavailable,
    MemoryLatentStore,
    RedisLatentStore,
    latent_from_bytes,
    open_latent_store,
)
from tests.engine.latent_store_contract import LatentStoreContract, code


class TestMemoryLatentStore(LatentStoreContract):
    def make(self) -> MemoryLatentStore:
        return MemoryLatentStore()

    def test_beyond_max_entries_the_least_recently_used_is_dropped(self):
        store = MemoryLatentStore(max_entries=2)
        store.put_many({"a": code(1), "b": code(2)})
        assert store.get("a") == code(1)  # reading a code makes it recent: b is now the oldest
        store.put_many({"c": code(3)})
        assert store.get("b") is None and store.get("a") == code(1) and store.get("c") == code(3)
        assert len(store) == 2


class TestRedisLatentStore(LatentStoreContract):
    """Each test writes under a key prefix of its own (the ``redis_prefix`` fixture), deleted afterwards."""

    @pytest.fixture(autouse=True)
    def _on_the_test_redis(self, redis_url, redis_prefix):
        self.url, self.prefix = redis_url, redis_prefix

    def make(self, *, ttl_seconds: int = 3600) -> RedisLatentStore:
        return RedisLatentStore.from_url(self.url, prefix=self.prefix, ttl_seconds=ttl_seconds)

    def test_a_code_written_by_one_worker_is_read_by_another(self):
        one, other = self.make(), self.make()  # two clients, as two processes would have
        one.put_many({"a": code(1)})
        assert other.get("a") == code(1)

    def test_a_code_expires_its_ttl_after_it_was_last_written(self):
        store = self.make(ttl_seconds=100)
        store.put_many({"a": code(1)})
        assert 0 < store.client.pttl(f"{self.prefix}a") <= 100_000
        store.client.pexpire(f"{self.prefix}a", 10)  # nearly expired ...
        store.put_many({"a": code(1)})  # ... until its set is served again
        assert store.client.pttl(f"{self.prefix}a") > 10_000

    def test_open_latent_store_follows_the_redis_url(self):
        assert isinstance(open_latent_store(None), MemoryLatentStore)
        store = open_latent_store(self.url, ttl_seconds=60)
        assert isinstance(store, RedisLatentStore) and store.ttl_seconds == 60


def test_a_redis_that_does_not_answer_is_unavailable_not_empty():
    store = RedisLatentStore.from_url("redis://127.0.0.1:1/0")
    assert "does not answer" in (store.problem() or "")
    with pytest.raises(LatentStoreUnavailable, match=r"127\.0\.0\.1:1/0"):
        store.put_many({"a": code(1)})
    with pytest.raises(LatentStoreUnavailable, match=r"127\.0\.0\.1:1/0"):
        store.get("a")


def test_a_url_that_is_not_redis_is_refused():
    with pytest.raises(ValueError, match="redis://"):
        open_latent_store("http://127.0.0.1:6379")


def test_stored_bytes_of_the_wrong_size_or_not_finite_are_not_a_code():
    assert latent_from_bytes(code(1, z_dim=16), 64) is None
    assert latent_from_bytes(np.array([np.inf, 0], "<f2").tobytes(), 2) is None
