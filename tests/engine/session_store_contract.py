"""A contract every :class:`engine.serving.sessions.SessionStore` meets (``TestX(SessionStoreContract)``).

Serving posts a session's events in batches and reads them back for the next image set, possibly from another
thread (or, with a shared store such as Redis, another worker). A store answers ``add`` with the session's
event count after the batch, gives a session's events oldest first (equal times in the order they were
added), keeps sessions apart, holds at most ``max_events`` per session (the oldest dropped), hands out a copy
that the caller may change freely, and loses no event to concurrent writers.
"""

from __future__ import annotations

import sys
import threading
from datetime import UTC, datetime, timedelta

from engine.serving.sessions import SessionEvent, SessionStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def event(item: str, minute: int, kind: str = "view") -> SessionEvent:
    return SessionEvent(item_id=item, event_type=kind, timestamp=T0 + timedelta(minutes=minute))


def items(events: list[SessionEvent]) -> list[str]:
    return [e.item_id for e in events]


class SessionStoreContract:
    def make(self, *, max_events: int = 200) -> SessionStore:
        """An empty store holding at most ``max_events`` events per session."""
        raise NotImplementedError

    def test_an_unknown_session_has_no_events(self):
        assert self.make().get("never-seen") == []

    def test_add_answers_the_sessions_event_count(self):
        store = self.make()
        assert store.add("s", [event("a", 0), event("b", 1)]) == 2
        assert store.add("s", [event("c", 2)]) == 3
        assert store.add("s", []) == 3
        assert store.add("t", []) == 0

    def test_events_come_back_oldest_first_and_equal_times_in_arrival_order(self):
        store = self.make()
        store.add("s", [event("late", 9), event("first", 1)])
        store.add("s", [event("middle", 5, "add_to_cart"), event("first-too", 1, "purchase")])
        got = store.get("s")
        assert items(got) == ["first", "first-too", "middle", "late"]
        assert [e.event_type for e in got] == ["view", "purchase", "add_to_cart", "view"]
        assert got[1] == event("first-too", 1, "purchase")  # stored whole: item, type and time

    def test_sessions_are_kept_apart(self):
        store = self.make()
        store.add("s", [event("a", 0)])
        store.add("t", [event("b", 0), event("c", 1)])
        assert items(store.get("s")) == ["a"]
        assert items(store.get("t")) == ["b", "c"]

    def test_a_session_keeps_its_latest_max_events(self):
        store = self.make(max_events=3)
        assert store.add("s", [event(f"i{m}", m) for m in range(4)]) == 3
        assert items(store.get("s")) == ["i1", "i2", "i3"]
        # an event older than every stored one is the oldest, so it is the one dropped
        assert store.add("s", [event("old", -5), event("new", 10)]) == 3
        assert items(store.get("s")) == ["i2", "i3", "new"]

    def test_what_get_returns_is_the_callers_copy(self):
        store = self.make()
        store.add("s", [event("a", 0)])
        got = store.get("s")
        got.append(event("b", 1))
        got.clear()
        assert items(store.get("s")) == ["a"]

    def test_concurrent_writers_lose_no_event(self):
        store = self.make(max_events=10_000)
        writers, per_writer = 8, 100
        start = threading.Barrier(writers)
        # switch threads every microsecond, so that writers interleave inside add, as busy workers would
        before = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)

        def write(w: int) -> None:
            start.wait()
            for m in range(per_writer):
                store.add("shared", [event(f"w{w}-{m}", m)])

        threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            sys.setswitchinterval(before)
        got = store.get("shared")
        assert sorted(items(got)) == sorted(f"w{w}-{m}" for w in range(writers) for m in range(per_writer))
        assert [e.timestamp for e in got] == sorted(e.timestamp for e in got)
