"""Faults: the event store failing in the middle of a request or filling its disk, a promotion killed with
``kill -9``. What each must leave: the shopper served the control arm (never another arm's content), a batch
stored whole or not at all, and a serving pointer that names the old bundle or the new one."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine.artifacts.registry import POINTER, ArtifactRegistry, link_or_copy
from engine.experiments import ExperimentRegistry, experiment_from_dict
from engine.experiments.eventstore import Event, EventStore, StoreUnavailable
from engine.serving.service import Service, SharedState
from engine.serving.types import ImageSet, PopularSet
from tests.fault_injection import FailingStore, fill, pages_capped, tiny_filesystem

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = {
    "name": "pvp",
    "unit": "user",
    "start": "2024-05-01T00:00:00Z",
    "stop": "2024-05-15T00:00:00Z",
    "variants": [{"name": "control", "strategy": "popular"}, {"name": "treatment", "strategy": "personalised"}],
}
DURING = datetime(2024, 5, 3, 12, tzinfo=UTC)


def _service(root: Path, events) -> Service:
    service = Service(root, shared=SharedState(events=events), watch_seconds=None)
    assert service.load_current() is not None
    return service


def _set(service: Service, user: str):
    return service.image_set(user, 4, neighbours=2, at=DURING)


def _arms(service: Service, users: list[str]) -> dict[str, str]:
    """Each shopper's recorded variant, by serving them once with the store working."""
    variants = {}
    for user in users:
        shown = _set(service, user)
        assert shown.experiment == "pvp" and shown.experiment_skipped is None
        variants[user] = shown.variant
    assert set(variants.values()) == {"control", "treatment"}
    return variants


def _assert_control_shown(shown) -> None:
    """The control arm's set (catalogue photos of popular items), no exposure, and the response says why."""
    assert isinstance(shown.images, PopularSet) and shown.images.strategy == "popular"
    assert all(img.image_id.startswith("catalogue.") for img in shown.images.images)  # no generated image
    assert (shown.experiment, shown.variant, shown.exposure_id) == (None, None, None)
    assert "event store did not answer" in shown.experiment_skipped
    assert "'pvp'" in shown.experiment_skipped and "control arm 'control'" in shown.experiment_skipped


@pytest.fixture
def experiment_store(tmp_path):
    with EventStore(f"sqlite:///{tmp_path}/events.db") as store:
        ExperimentRegistry(store).create(experiment_from_dict(EXPERIMENT))
        yield store


USERS = [f"shopper-{i:03d}" for i in range(24)]


@pytest.mark.parametrize("broken", ["record_exposures", "assignment"])
def test_when_the_store_fails_mid_request_every_shopper_sees_the_control_arm(
    trained_artifacts, experiment_store, broken
):
    """The experiment list loaded, then the assignment read or the exposure write fails: the shopper gets the
    control arm's set whatever their variant, nothing is recorded, and the set says the experiment was skipped."""
    store = FailingStore(experiment_store)
    service = _service(trained_artifacts[0], store)
    variants = _arms(service, USERS)
    exposed = experiment_store.count_exposures("pvp")
    store.failing = {broken}
    for user in USERS:  # control and treatment shoppers alike
        _assert_control_shown(_set(service, user))
    assert experiment_store.count_exposures("pvp") == exposed  # nothing was recorded meanwhile
    store.failing = set()  # the database is back: each shopper is in their own arm again
    for user in USERS[:6]:
        shown = _set(service, user)
        assert shown.variant == variants[user] and shown.experiment_skipped is None


def test_when_the_experiment_list_cannot_be_read_the_last_one_read_decides(trained_artifacts, experiment_store):
    store = FailingStore(experiment_store)
    service = _service(trained_artifacts[0], store)
    _arms(service, USERS[:8])
    store.failing = {"load_experiments"}
    for user in USERS[:8]:
        _assert_control_shown(_set(service, user))
    # a process that never read the list knows of no experiment: the default set, and it says so
    fresh = _service(trained_artifacts[0], store)
    shown = _set(fresh, USERS[0])
    assert isinstance(shown.images, ImageSet) and shown.experiment is None
    assert "no running experiment is known here" in shown.experiment_skipped


class _CuttableProxy:
    """A TCP proxy to PostgreSQL that a test cuts, as a database host going away mid-request would."""

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.up = False
        for s in self.sockets:
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.cut()
        self.listener.close()


@pytest.mark.postgres
def test_postgres_going_down_during_the_exposure_write_shows_the_control_arm(trained_artifacts):
    """A real outage: the connection to PostgreSQL is cut after the experiment list was read, just before the
    exposure is written."""
    admin = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test", isolation_level="AUTOCOMMIT")
    name = f"vitrine_faults_{os.getpid()}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
    except sa.exc.OperationalError as exc:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 does not answer: {exc}"[:300])
    proxy = _CuttableProxy()
    store = EventStore(f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/{name}")
    try:
        ExperimentRegistry(store).create(experiment_from_dict(EXPERIMENT))
        service = _service(trained_artifacts[0], store)
        variants = _arms(service, USERS[:12])
        control = next(u for u, v in variants.items() if v == "control")
        real_record = store.record_exposures

        def cut_then_record(*args, **kwargs):
            proxy.cut()
            return real_record(*args, **kwargs)

        store.record_exposures = cut_then_record
        shown = _set(service, control)
        _assert_control_shown(shown)
        with pytest.raises(StoreUnavailable):  # the store itself: down, said plainly
            store.count_exposures("pvp")
    finally:
        store.close()
        proxy.close()
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


# ---- the disk fills during an event write ------------------------------------------------------------------


def _batch(n: int, tag: str) -> list[Event]:
    return [
        Event(client_event_id=f"{tag}-{i:05d}-{'x' * 60}", kind="click", ts=1.7e9, user_id=f"u{i}", image_id="img")
        for i in range(n)
    ]


def test_a_full_database_stores_nothing_of_the_batch_and_says_so(tmp_path):
    with EventStore(f"sqlite:///{tmp_path}/events.db") as store:
        store.add_events(_batch(10, "before"))
        with pages_capped(store):
            with pytest.raises(StoreUnavailable, match="could not write: database or disk is full"):
                store.add_events(_batch(400, "lost"))
            assert store.count_events() == 10  # all or nothing: none of the 400
        assert all(store.add_events(_batch(400, "lost")).new)  # resent once there is room: stored whole
        assert store.count_events() == 410


def test_a_full_disk_stores_nothing_of_the_batch_and_says_so():
    with tiny_filesystem() as mount, EventStore(f"sqlite:///{mount}/events.db") as store:
        store.add_events(_batch(10, "before"))
        filler = fill(mount)
        with pytest.raises(StoreUnavailable, match="database or disk is full"):
            store.add_events(_batch(400, "lost"))
        assert store.count_events() == 10
        filler.unlink()
        assert all(store.add_events(_batch(400, "lost")).new)
        assert store.count_events() == 410


# ---- kill -9 during promotion ---------------------------------------------------------------------------------

OLD, NEW = "20260101T000000Z-0000aa", "20260102T000000Z-0000bb"


def _child(code: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )


def _pointer(root: Path) -> str:
    text = (root / POINTER).read_text()
    assert text.endswith("\n") and text.strip() in (OLD, NEW), f"CURRENT holds {text!r}"
    return text.strip()


def test_kill_9_at_random_moments_of_promotions_leaves_the_old_or_the_new_pointer(tmp_path):
    """A process that promotes in a loop (old, new, old, …) is killed at random moments; a reader polling the
    pointer meanwhile, and the pointer after each kill, only ever see a whole version name."""
    registry = ArtifactRegistry(tmp_path)
    registry.set_current(OLD)
    rng = random.Random(0)
    seen = set()
    for _ in range(12):
        child = _child(
            """
            import sys
            from engine.artifacts.registry import ArtifactRegistry
            registry = ArtifactRegistry(sys.argv[1])
            print("ready", flush=True)
            while True:
                registry.set_current(sys.argv[3])
                registry.set_current(sys.argv[2])
            """,
            str(tmp_path),
            OLD,
            NEW,
        )
        assert child.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 20
        while registry.current() == OLD and time.monotonic() < deadline:  # until it has written at least once
            seen.add(registry.current())
        for _ in range(rng.randrange(20, 400)):  # read while it writes, then kill it at a random moment
            seen.add(registry.current())
        child.send_signal(signal.SIGKILL)
        child.wait()
        seen.add(_pointer(tmp_path))
    assert seen == {OLD, NEW}


@pytest.mark.parametrize("killed_in", ["os.fsync", "os.replace"])
def test_kill_9_between_writing_and_renaming_leaves_the_old_pointer_and_serving_goes_on(
    trained_artifacts, tmp_path, killed_in
):
    """``vitrine promote`` of a new bundle, killed while the new name is being flushed or just before the rename:
    CURRENT still names the old bundle, and a service following the pointer keeps serving it."""
    root, version = trained_artifacts
    for name in (OLD, NEW):
        shutil.copytree(root / version, tmp_path / name, copy_function=link_or_copy)
    ArtifactRegistry(tmp_path).set_current(OLD)
    service = Service(tmp_path, watch_seconds=0.0)
    assert service.load_current() == OLD
    child = _child(
        f"""
        import os, sys, time
        from engine.artifacts.promotion import promote_bundle
        from engine.artifacts.registry import ArtifactRegistry
        real = {killed_in}
        def pause(*args):
            if str(args[-1]).endswith("CURRENT") or "{killed_in}" == "os.fsync":
                print("paused", flush=True)
                time.sleep(600)
            return real(*args)
        {killed_in} = pause
        promote_bundle(ArtifactRegistry(sys.argv[1]), sys.argv[2], force=True)
        """,
        str(tmp_path),
        NEW,
    )
    try:
        assert child.stdout.readline().strip() == "paused"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert _pointer(tmp_path) == OLD
    assert ArtifactRegistry(tmp_path).current() == OLD
    shown = service.image_set("shopper-001", 2, neighbours=2)  # follows the pointer: still the old bundle
    assert shown.images.bundle_version == OLD and len(shown.images.images) == 2
    ArtifactRegistry(tmp_path).set_current(NEW)  # a promotion that completes is followed as before
    assert service.reload() == NEW
