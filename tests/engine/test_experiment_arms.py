"""Serving's list of running experiments: read on every request by default, or reused for ``refresh_seconds``
(the API's setting), and read again at once after this process writes an experiment."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine.experiments import ExperimentRegistry, experiment_from_dict
from engine.experiments.eventstore import EventStore
from engine.serving import arms
from engine.serving.arms import ExperimentArms

AT = datetime(2024, 5, 3, 12, tzinfo=UTC).timestamp()


def _experiment(name: str) -> dict:
    return {
        "name": name,
        "unit": "user",
        "start": "2024-05-01T00:00:00Z",
        "stop": "2024-05-15T00:00:00Z",
        "variants": [{"name": "control", "strategy": "popular"}, {"name": "treatment", "strategy": "personalised"}],
    }


@pytest.fixture
def store(tmp_path):
    with EventStore(f"sqlite:///{tmp_path}/events.db") as s:
        ExperimentRegistry(s).create(experiment_from_dict(_experiment("first")))
        yield s


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(arms.time, "monotonic", lambda: now[0])
    return now


def _names(arms_: ExperimentArms) -> list[str]:
    return [e.name for e in arms_.running(AT)]


def test_without_refresh_every_request_reads_the_list(store, clock):
    served = ExperimentArms(store)
    assert _names(served) == ["first"]
    ExperimentRegistry(store).create(experiment_from_dict(_experiment("second")))  # another process
    assert _names(served) == ["first", "second"]


def test_a_list_is_reused_for_refresh_seconds_then_read_again(store, clock):
    served = ExperimentArms(store, refresh_seconds=1.0)
    assert _names(served) == ["first"]
    ExperimentRegistry(store).create(experiment_from_dict(_experiment("second")))  # another process or host
    clock[0] += 0.9
    assert _names(served) == ["first"]
    clock[0] += 0.2
    assert _names(served) == ["first", "second"]


def test_a_write_through_this_process_is_seen_at_once(store, clock):
    served = ExperimentArms(store, refresh_seconds=60.0)
    assert _names(served) == ["first"]
    ExperimentRegistry(store).create(experiment_from_dict(_experiment("second")))
    served.changed()
    assert _names(served) == ["first", "second"]


def test_an_experiment_named_in_the_request_is_always_read(store, clock):
    served = ExperimentArms(store, refresh_seconds=60.0)
    assert _names(served) == ["first"]
    ExperimentRegistry(store).create(experiment_from_dict(_experiment("second")))
    assert [e.name for e in served.running(AT, "second")] == ["second"]


def test_a_negative_refresh_is_refused(store):
    with pytest.raises(ValueError, match="refresh_seconds"):
        ExperimentArms(store, refresh_seconds=-1)
