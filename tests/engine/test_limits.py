"""Limits that keep a caller or a crowd from taking the service down: token buckets per client key (in process
and in Redis), the admission gate around generation, and the in-process session store's memory budget."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.serving.image_ids import ImageIdCodec
from engine.serving.limits import AdmissionGate, MemoryRateLimiter, Overloaded, RedisRateLimiter
from engine.serving.sessions import MemorySessionStore, SessionEvent
from engine.serving.types import UnknownImage


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_lets_a_burst_through_then_the_rate_and_says_when_to_retry():
    clock = FakeClock()
    limiter = MemoryRateLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)  # empty: one token comes in 1/2 s
    assert limiter.take("b") == 0.0  # another key has its own bucket
    clock.now += 0.5
    assert limiter.take("a") == 0.0
    assert limiter.take("a") > 0
    clock.now += 60  # a quiet minute refills the bucket to its burst, not beyond
    assert [limiter.take("a") for _ in range(4)][-1] > 0


def test_the_in_process_buckets_are_bounded_in_number():
    limiter = MemoryRateLimiter(rate=1.0, burst=1, max_keys=100, clock=FakeClock())
    for i in range(1000):
        limiter.take(f"key-{i}")
    assert len(limiter._buckets) == 100


def test_bad_rates_are_refused():
    with pytest.raises(ValueError, match="rate > 0"):
        MemoryRateLimiter(rate=0, burst=1)


@pytest.mark.redis
def test_redis_buckets_are_shared_by_every_limiter_on_the_same_redis(redis_url):
    import redis

    prefix = f"vitrine:test-rate:{uuid.uuid4().hex}:"
    a = RedisRateLimiter(redis.Redis.from_url(redis_url), rate=0.5, burst=2, prefix=prefix)
    b = RedisRateLimiter(redis.Redis.from_url(redis_url), rate=0.5, burst=2, prefix=prefix)
    try:
        assert a.take("k") == 0.0 and b.take("k") == 0.0  # two workers, one bucket of 2
        wait = a.take("k")
        assert 1.0 < wait <= 2.0  # 0.5 tokens a second: the next in about 2 s
        assert b.take("other") == 0.0
    finally:
        a.client.delete(*a.client.keys(prefix + "*"))


def test_a_redis_that_does_not_answer_lets_requests_through():
    import redis

    down = RedisRateLimiter(redis.Redis(port=1, socket_connect_timeout=0.1), rate=1.0, burst=1)
    assert [down.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]


def test_the_gate_runs_a_few_lets_a_few_wait_and_refuses_the_rest_at_once():
    gate = AdmissionGate(max_running=2, max_waiting=3, wait_seconds=30)
    release = threading.Event()
    inside = threading.Semaphore(0)
    outcomes: list[str] = []
    lock = threading.Lock()

    def generate() -> None:
        try:
            with gate.admit():
                inside.release()
                release.wait(30)
            result = "done"
        except Overloaded as exc:
            assert exc.retry_after > 0
            result = "refused"
        with lock:
            outcomes.append(result)

    with ThreadPoolExecutor(10) as pool:
        futures = [pool.submit(generate) for _ in range(10)]
        for _ in range(2):
            assert inside.acquire(timeout=10)  # two run
        deadline = datetime.now() + timedelta(seconds=10)
        while (gate.waiting < 3 or len(outcomes) < 5) and datetime.now() < deadline:
            threading.Event().wait(0.01)
        assert (gate.running, gate.waiting) == (2, 3)
        assert outcomes == ["refused"] * 5  # the excess was refused without waiting
        release.set()
        for f in futures:
            f.result(timeout=30)
    assert sorted(outcomes) == ["done"] * 5 + ["refused"] * 5
    assert (gate.running, gate.waiting) == (0, 0)


def test_a_waiter_gives_up_after_its_wait():
    gate = AdmissionGate(max_running=1, max_waiting=1, wait_seconds=0.05)
    with gate.admit(), pytest.raises(Overloaded, match="no place came free"), gate.admit():
        pass
    with gate.admit():  # the place came back
        pass


class Watcher:
    def __init__(self) -> None:
        self.limits: tuple[int | None, int] | None = None
        self.seen: list[tuple[int, int]] = []
        self.refused: list[str] = []

    def gate_limits(self, max_running: int | None, max_waiting: int) -> None:
        self.limits = (max_running, max_waiting)

    def gate_changed(self, running: int, waiting: int) -> None:
        self.seen.append((running, waiting))

    def gate_refused(self, reason: str) -> None:
        self.refused.append(reason)


def wait_for_a_place(gate: AdmissionGate) -> None:
    with gate.admit():
        pass


def test_the_gate_tells_its_observer_every_place_taken_and_every_refusal():
    watcher = Watcher()
    gate = AdmissionGate(max_running=1, max_waiting=1, wait_seconds=30, observer=watcher)
    assert watcher.limits == (1, 1)
    with ThreadPoolExecutor(1) as pool:
        with gate.admit():
            waiter = pool.submit(wait_for_a_place, gate)
            deadline = datetime.now() + timedelta(seconds=10)
            while gate.waiting < 1 and datetime.now() < deadline:
                threading.Event().wait(0.01)
            with pytest.raises(Overloaded), gate.admit():  # no place, no room to wait
                pass
        waiter.result(timeout=10)
    assert watcher.refused == ["full"]
    # places: taken; a waiter; given back; the waiter stops waiting, takes it, gives it back
    assert watcher.seen == [(0, 0), (1, 0), (1, 1), (0, 1), (0, 0), (1, 0), (0, 0)]

    impatient = AdmissionGate(max_running=1, max_waiting=1, wait_seconds=0.01, observer=watcher)
    with impatient.admit(), pytest.raises(Overloaded), impatient.admit():
        pass
    assert watcher.refused == ["full", "timeout"]


def _events(n: int, start: datetime) -> list[SessionEvent]:
    return [
        SessionEvent(item_id=f"item-{k:06d}", event_type="view", timestamp=start + timedelta(seconds=k))
        for k in range(n)
    ]


def test_the_in_process_session_store_keeps_to_its_memory_budget():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    store = MemorySessionStore(max_sessions=100_000, max_events=200, max_bytes=2_000_000)
    for s in range(1000):  # 1000 full sessions would take ~7 MB
        store.add(f"session-{s:05d}", _events(200, start))
        if s == 10:
            store.get("session-00000")  # read: recently used, so kept
        assert store.size_bytes <= 2_000_000
    assert len(store._data) < 100
    assert store.get("session-00999")  # the newest are kept
    assert store.get("session-00001") == []  # the oldest untouched ones are gone
    store.delete("session-00999")
    assert store.size_bytes == sum(store._sizes.values())


def test_one_session_never_evicts_itself():
    store = MemorySessionStore(max_bytes=1)
    assert store.add("s", _events(3, datetime(2026, 1, 1, tzinfo=UTC))) == 3
    assert len(store.get("s")) == 3


CODEC = ImageIdCodec("v1", [[0, 1], [1, 0], [2, 2]], b"k" * 32)
VALID = CODEC.encode(2, 12345)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200) | st.sampled_from([VALID + "\n", VALID.replace("2", "٢", 1), VALID + "x", VALID[:-1]]))
def test_any_string_is_an_image_id_or_unknown_never_another_error(text):
    try:
        ref = CODEC.decode(text)
    except UnknownImage:
        return
    assert text == VALID and ref.condition == 2


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 84), st.characters(codec="ascii"))
def test_a_changed_character_makes_an_id_unknown(position, char):
    changed = VALID[:position] + char + VALID[position + 1 :]
    if changed == VALID:
        return
    with pytest.raises(UnknownImage):
        CODEC.decode(changed)


@pytest.mark.parametrize(
    "bad",
    [
        VALID.split(".")[0] + "." + "9" * 20 + "." + ".".join(VALID.split(".")[2:]),  # a 20-digit condition
        VALID.split(".")[0] + ".٣." + ".".join(VALID.split(".")[2:]),  # a digit of another script
        VALID + "\n",  # a trailing newline that `$` would take
        VALID[:-2] + "==",  # base64 padding in the tag
        "",
        "." * 85,
        "x" * 10_000,
    ],
)
def test_malformed_ids_are_unknown(bad):
    with pytest.raises(UnknownImage, match="request a new image set"):
        CODEC.decode(bad)


def test_new_experiments_keep_the_limits_and_old_ones_still_load():
    from engine.experiments import Experiment, ExperimentRegistry, Variant
    from engine.experiments.eventstore import EventStore

    start = datetime(2024, 1, 1, tzinfo=UTC)
    long = Experiment(
        name="long", start=start, stop=start + timedelta(days=400), variants=(Variant(name="a"), Variant(name="b"))
    )
    heavy = Experiment(
        name="heavy",
        start=start,
        stop=start + timedelta(days=7),
        variants=(Variant(name="a", weight=1e7), Variant(name="b")),
    )
    with EventStore("sqlite://") as store:
        registry = ExperimentRegistry(store)
        with pytest.raises(ValueError, match="lasts more than 366 days"):
            registry.create(long)
        with pytest.raises(ValueError, match=r"variants \['a'\] weigh more than 1e\+06"):
            registry.create(heavy)
        store.save_experiment("long", long.to_dict(), create=True)  # stored before the limits existed
        assert registry.get("long").stop == long.stop
