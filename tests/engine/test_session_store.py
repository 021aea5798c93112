"""Session stores against the contract in :mod:`tests.engine.session_store_contract`: the in-process one, and
the Redis one on the test Redis (the ``redis_url`` fixture: skipped, saying why, when it does not answer)."""

import time
from datetime import datetime

import pytest

from engine.serving.sessions import (
    MemorySessionStore,
    RedisSessionStore,
    SessionEvent,
    SessionStoreUnavailable,
)
from tests.engine.session_store_contract import SessionStoreContract, event, items


class TestMemorySessionStore(SessionStoreContract):
    def make(self, *, max_events: int = 200) -> MemorySessionStore:
        return MemorySessionStore(max_events=max_events)

    def test_beyond_max_sessions_the_least_recently_used_is_dropped(self):
        store = MemorySessionStore(max_sessions=2)
        store.add("a", [event("x", 0)])
        store.add("b", [event("y", 0)])
        assert items(store.get("a")) == ["x"]  # reading a session makes it recent: b is now the oldest
        store.add("c", [event("z", 0)])
        assert store.get("b") == []
        assert items(store.get("a")) == ["x"] and items(store.get("c")) == ["z"]


@pytest.mark.redis
class TestRedisSessionStore(SessionStoreContract):
    """Each test writes under a key prefix of its own (the ``redis_prefix`` fixture), deleted afterwards."""

    @pytest.fixture(autouse=True)
    def _on_the_test_redis(self, redis_url, redis_prefix):
        self.url, self.prefix = redis_url, redis_prefix

    def make(self, *, max_events: int = 200, ttl_seconds: int = 86_400) -> RedisSessionStore:
        return RedisSessionStore.from_url(self.url, prefix=self.prefix, max_events=max_events, ttl_seconds=ttl_seconds)

    def test_a_session_written_by_one_worker_is_read_by_another(self):
        one, other = self.make(), self.make()  # two clients, as two processes would have
        one.add("s", [event("a", 0)])
        other.add("s", [event("b", 1)])
        assert items(one.get("s")) == items(other.get("s")) == ["a", "b"]

    def test_a_session_expires_its_ttl_after_its_last_event(self):
        store = self.make(ttl_seconds=1)
        store.add("s", [event("a", 0)])
        store.add("t", [event("b", 0)])
        time.sleep(0.5)
        store.add("t", [event("c", 1)])  # an event renews the session's time to live; reading does not
        assert items(store.get("s")) == ["a"]
        left = {sid: store.client.pttl(f"{self.prefix}{{{sid}}}:events") for sid in ("s", "t")}
        assert 0 < left["s"] <= 500 < left["t"] <= 1000, left
        time.sleep(0.6)
        assert store.get("s") == []
        assert store.add("s", [event("d", 2)]) == 1  # an expired session starts again, from nothing

    def test_events_are_stored_as_compact_json(self):
        store = self.make()
        store.add("s", [event("a", 0, "purchase")])
        [member] = store.client.zrange(f"{self.prefix}{{s}}:events", 0, -1)
        assert member.endswith(b'{"item_id":"a","event_type":"purchase","ts_us":1772366400000000}')


def test_a_timestamp_without_a_time_zone_is_refused():
    with pytest.raises(ValueError, match="no time zone"):
        SessionEvent(item_id="a", event_type="view", timestamp=datetime(2026, 3, 1, 12))


def test_a_redis_that_does_not_answer_is_unavailable_not_empty():
    store = RedisSessionStore.from_url("redis://127.0.0.1:1/0")  # nothing listens on port 1
    assert "does not answer" in (store.problem() or "")
    with pytest.raises(SessionStoreUnavailable, match=r"127\.0\.0\.1:1/0"):
        store.add("s", [event("a", 0)])
    with pytest.raises(SessionStoreUnavailable, match=r"127\.0\.0\.1:1/0"):
        store.get("s")


def test_a_url_that_is_not_redis_is_refused():
    with pytest.raises(ValueError, match="redis://"):
        RedisSessionStore.from_url("http://127.0.0.1:6379")
