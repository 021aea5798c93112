"""The in-process session store against the contract in :mod:`tests.engine.session_store_contract`."""

from engine.serving.sessions import MemorySessionStore
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
