"""The event store contract, run against SQLite (file, WAL), SQLite in memory and PostgreSQL.

The concurrency tests have N writers add M events each (plus everyone resending a slice of the others' ids)
and check that every event is counted exactly once.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from engine.experiments import Experiment, ExperimentRegistry, Variant, experiment_report
from engine.experiments.eventstore import (
    BadEvents,
    Event,
    EventConflict,
    EventStore,
    ExposureIn,
    StoreError,
    ingest_events,
)
from engine.experiments.ingest import EventLimits
from engine.experiments.tables import schema_migrations

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def view(cid: str, ts: float, session: str = "s1", item: str = "i1", kind: str = "view") -> Event:
    extra = {"revenue": 10.0} if kind == "purchase" else {}
    return Event(client_event_id=cid, kind=kind, ts=ts, session_id=session, user_id="u1", item_id=item, **extra)


def _write_batch(url: str, writer: int, m: int, n: int) -> tuple[int, int]:
    """One writer: its own M events, then a resend of the first 10 ids of the next writer (duplicates)."""
    store = EventStore(url)
    try:
        stored = duplicates = 0
        for start in range(0, m, 25):
            batch = [view(f"w{writer}-e{j}", float(j), session=f"s{writer}") for j in range(start, min(m, start + 25))]
            result = store.add_events(batch)
            stored += result.stored
            duplicates += result.duplicates
        other = (writer + 1) % n
        result = store.add_events([view(f"w{other}-e{j}", float(j), session=f"s{other}") for j in range(10)])
        return stored + result.stored, duplicates + result.duplicates
    finally:
        store.close()


class EventStoreContract:
    """Behaviour every backend must show. Subclasses provide the ``url`` fixture."""

    @pytest.fixture
    def store(self, url):
        with EventStore(url) as s:
            yield s

    def test_adding_an_event_twice_stores_it_once(self, store):
        first = store.add_events([view("a", 1.0), view("b", 2.0), view("a", 1.0)])
        assert first.new == (True, True, False)
        again = store.add_events([view("b", 2.0), view("c", 3.0)])
        assert again.new == (False, True)
        assert (again.stored, again.duplicates) == (1, 1)
        assert store.count_events() == 3

    def test_an_id_resent_with_another_payload_is_a_conflict_and_stores_nothing(self, store):
        store.add_events([view("a", 1.0)])
        with pytest.raises(EventConflict) as info:  # "a" again, now naming another item; "z" is new
            store.add_events([view("z", 5.0), view("a", 1.0, item="i2")])
        assert [(i, cid) for i, cid, _ in info.value.errors] == [(1, "a")]
        assert "another item_id" in info.value.errors[0][2]
        with pytest.raises(EventConflict, match="another kind, revenue"):  # within one batch, too
            store.add_events([view("b", 2.0), view("b", 2.0, kind="purchase")])
        assert store.count_events() == 1  # neither batch left anything behind
        assert store.add_events([view("a", 1.0)]).new == (False,)  # a true resend stays a duplicate

    def test_a_resend_stamped_on_arrival_may_carry_another_time(self, store):
        store.add_events([view("a", 1.0)])
        with pytest.raises(EventConflict, match="another ts"):
            store.add_events([view("a", 2.0)])
        assert store.add_events([view("a", 2.0)], ts_stated=[False]).new == (False,)

    def test_the_report_survives_revenue_too_large_to_add_up(self, store):
        exp = Experiment(
            name="rich",
            start=datetime(2024, 5, 1, tzinfo=UTC),
            stop=datetime(2024, 6, 1, tzinfo=UTC),
            variants=(Variant(name="control", strategy="popular"), Variant(name="treatment")),
        )
        ExperimentRegistry(store).create(exp)
        t0 = exp.start.timestamp()
        for arm in ("control", "treatment"):
            units = [f"{arm}-{i}" for i in range(3)]
            store.record_exposures("rich", [ExposureIn(unit_id=u, ts=t0, user_id=u) for u in units], lambda u, a=arm: a)
        # two purchases at the float maximum: stored before any limit existed, their sum overflows
        store.add_events(
            [
                Event(
                    client_event_id=f"p{k}",
                    kind="purchase",
                    ts=t0 + 60,
                    user_id="treatment-0",
                    item_id="i",
                    revenue=1.7e308,
                )
                for k in range(2)
            ]
        )
        report = experiment_report(store, "rich", as_of=exp.start + timedelta(days=2))
        json.dumps(report, allow_nan=False)  # what the API serialises; inf or nan would fail here
        treatment = report["variants"][1]
        assert treatment["conversions"] == 1
        assert treatment["revenue"] is None and treatment["revenue_per_exposure"] is None
        assert any("too large to add up" in w for w in report["warnings"])

    def test_session_events_are_the_item_events_in_time_order(self, store):
        store.add_events(
            [
                view("late", 30.0),
                view("early", 10.0, kind="add_to_cart"),
                view("buy", 40.0, kind="purchase"),
                Event(client_event_id="click", kind="click", ts=20.0, session_id="s1", image_id="img"),
                view("other-session", 15.0, session="s2"),
            ]
        )
        events = store.session_events("s1")
        assert [e.client_event_id for e in events] == ["early", "late", "buy"]
        assert [e.kind for e in events] == ["add_to_cart", "view", "purchase"]
        assert events[-1].revenue == 10.0
        assert store.session_events("nobody") == []

    def test_the_first_recorded_variant_is_kept(self, store):
        choose_a = lambda unit: "A"  # noqa: E731
        choose_b = lambda unit: "B"  # noqa: E731
        assert store.record_exposures("exp", [ExposureIn(unit_id="u1", ts=5.0)], choose_a) == ["A"]
        assert store.record_exposures("exp", [ExposureIn(unit_id="u1", ts=6.0)], choose_b) == ["A"]
        assert store.record_exposures("exp", [ExposureIn(unit_id="u2", ts=6.0)], lambda u: None) == [None]
        assert store.assignment("exp", "u1") == "A"
        assert store.assignment("exp", "u2") is None
        assert store.count_exposures("exp") == {"A": 2}

    def test_an_exposure_id_is_recorded_once(self, store):
        exposure = ExposureIn(unit_id="u1", ts=5.0, exposure_id="x1", image_ids=("i1", "i2"))
        store.record_exposures("exp", [exposure], lambda u: "A")
        store.record_exposures("exp", [exposure], lambda u: "A")
        assert store.count_exposures("exp") == {"A": 1}

    def test_experiments_round_trip(self, store):
        store.save_experiment("e1", {"name": "e1", "x": 1}, create=True)
        with pytest.raises(KeyError, match="already exists"):
            store.save_experiment("e1", {"name": "e1"}, create=True)
        store.save_experiment("e1", {"name": "e1", "x": 2}, create=False)
        with pytest.raises(KeyError, match="no experiment"):
            store.save_experiment("e2", {}, create=False)
        assert store.load_experiment("e1") == {"name": "e1", "x": 2}
        assert store.load_experiments() == [{"name": "e1", "x": 2}]
        assert store.load_experiment("nope") is None

    def test_concurrent_writers_count_every_event_exactly_once(self, store, url):
        n, m = 6, 150
        with ThreadPoolExecutor(n) as pool:
            results = list(pool.map(lambda w: _write_batch(url, w, m, n), range(n)))
        assert store.count_events() == n * m
        assert sum(s for s, _ in results) == n * m
        assert sum(d for _, d in results) == n * 10
        for w in range(n):  # and each one is whole
            assert len(store.session_events(f"s{w}")) == m

    def test_concurrent_first_exposures_of_one_unit_agree(self, store, url):
        barrier = threading.Barrier(4)

        def expose(k: int) -> str | None:
            with EventStore(url) as s:
                barrier.wait()
                return s.record_exposures("race", [ExposureIn(unit_id="u", ts=float(k))], lambda u, k=k: f"v{k}")[0]

        with ThreadPoolExecutor(4) as pool:
            variants = list(pool.map(expose, range(4)))
        assert len(set(variants)) == 1
        assert store.assignment("race", "u") == variants[0]
        assert sum(store.count_exposures("race").values()) == 4

    def test_reopening_does_not_reapply_migrations(self, store, url):
        with EventStore(url) as again:
            assert again.schema_version == store.schema_version == 1
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(schema_migrations)).scalar() == 1
        engine.dispose()

    def test_a_newer_schema_is_refused(self, url, store):
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(schema_migrations.insert().values(version=99, name="future", applied_at=0.0))
        engine.dispose()
        with pytest.raises(StoreError, match="schema version 99, newer than this code"):
            EventStore(url)


class TestSQLiteFile(EventStoreContract):
    @pytest.fixture
    def url(self, tmp_path):
        return f"sqlite:///{tmp_path}/events.db"

    def test_uses_write_ahead_logging(self, store):
        with store._engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"

    def test_concurrent_processes_count_every_event_exactly_once(self, url, store):
        n, m = 3, 100
        with multiprocessing.get_context("spawn").Pool(n) as pool:
            results = pool.starmap(_write_batch, [(url, w, m, n) for w in range(n)])
        assert store.count_events() == n * m
        assert sum(s for s, _ in results) == n * m


class TestSQLiteMemory:
    """In memory: one shared connection (the simulator's store); the single-connection contract parts."""

    def test_idempotent_and_threads_take_turns(self):
        with EventStore("sqlite://") as store:
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda w: store.add_events([view(f"e{j}", float(j)) for j in range(50)]), range(4)))
            assert store.count_events() == 50


def _postgres_answers() -> str | None:
    try:
        engine = sa.create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
        return None
    except Exception as exc:  # any failure to connect means: skip, saying why
        return f"PostgreSQL at 127.0.0.1:5432 (database 'test', user postgres) does not answer: {exc}"[:300]


@pytest.mark.postgres
class TestPostgres(EventStoreContract):
    @pytest.fixture
    def url(self):
        reason = _postgres_answers()
        if reason:
            pytest.skip(reason)
        name = f"vitrine_test_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()


# ----------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "like"}, "kind must be one of"),
        ({"user_id": None, "session_id": None}, "needs a user_id or a session_id"),
        ({"kind": "view", "item_id": None}, "needs the item_id"),
        ({"kind": "purchase"}, "needs revenue"),
        ({"kind": "purchase", "revenue": -1.0}, "needs revenue"),
        ({"kind": "view", "revenue": 3.0}, "only purchases carry revenue"),
        ({"kind": "click", "item_id": None}, "needs the image_id"),
        ({"client_event_id": ""}, "client_event_id must be a non-empty string"),
    ],
)
def test_bad_events_say_what_is_wrong(fields, message):
    base = {"client_event_id": "e", "kind": "view", "ts": 1.0, "user_id": "u", "session_id": None, "item_id": "i"}
    with pytest.raises(ValueError, match=message):
        Event(**{**base, **fields})


def test_ingest_is_all_or_nothing_and_names_each_bad_event():
    with EventStore("sqlite://") as store:
        raw = [
            {"client_event_id": "ok", "kind": "view", "user_id": "u", "item_id": "i", "ts": "2024-05-01T10:00:00Z"},
            {"client_event_id": "bad1", "kind": "purchase", "user_id": "u", "item_id": "i"},
            {"client_event_id": "bad2", "kind": "view", "user_id": "u", "item_id": "i", "colour": "red"},
        ]
        with pytest.raises(BadEvents) as info:
            ingest_events(store, raw)
        assert [(i, cid) for i, cid, _ in info.value.errors] == [(1, "bad1"), (2, "bad2")]
        assert "unknown fields ['colour']" in info.value.errors[1][2]
        assert store.count_events() == 0
        result = ingest_events(store, raw[:1])
        assert result.new == (True,)
        assert store.session_events("x") == []


def test_an_unsupported_url_is_refused():
    with pytest.raises(ValueError, match="unsupported database URL"):
        EventStore("mysql://localhost/x")


def test_limits_refuse_absurd_revenue_and_times_outside_the_window():
    now = datetime(2026, 6, 1, tzinfo=UTC).timestamp()
    limits = EventLimits.around(now, retention_days=365, max_revenue=1e6)
    base = {"kind": "purchase", "user_id": "u", "item_id": "i", "revenue": 10.0}
    raw = [
        {**base, "client_event_id": "ok", "ts": now - 364 * 86_400},
        {**base, "client_event_id": "rich", "ts": now, "revenue": 1.7e308},
        {**base, "client_event_id": "old", "ts": now - 366 * 86_400},
        {**base, "client_event_id": "ahead", "ts": now + 301},
        {**base, "client_event_id": "skewed", "ts": now + 299},
    ]
    with EventStore("sqlite://") as store:
        with pytest.raises(BadEvents) as info:
            ingest_events(store, raw, limits=limits)
        problems = {cid: msg for _, cid, msg in info.value.errors}
        assert sorted(problems) == ["ahead", "old", "rich"]
        assert "above the largest this service accepts (1e+06)" in problems["rich"]
        assert "before 2025-06-01T00:00:00Z, the oldest time" in problems["old"]
        assert "in the future" in problems["ahead"]
        assert store.count_events() == 0
        # without a window (a simulation's client clock) old times pass; the revenue limit still holds
        loose = EventLimits.around(now, retention_days=None, max_revenue=1e6)
        assert ingest_events(store, [raw[0], raw[2], raw[4]], limits=loose).stored == 3
        with pytest.raises(BadEvents, match="above the largest"):
            ingest_events(store, [raw[1]], limits=loose)


def test_ingest_compares_times_only_when_the_client_gave_them():
    with EventStore("sqlite://") as store:
        event = {"client_event_id": "e", "kind": "view", "user_id": "u", "item_id": "i"}
        assert ingest_events(store, [event]).stored == 1
        assert ingest_events(store, [event]).duplicates == 1  # stamped on arrival again: the same event
        with pytest.raises(EventConflict, match="another user_id"):
            ingest_events(store, [{**event, "user_id": "v"}])
