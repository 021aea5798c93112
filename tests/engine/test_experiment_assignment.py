"""Experiment definitions (strict loader) and assignment: hashing properties, traffic ramps, recorded variants."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.experiments import (
    Experiment,
    ExperimentExists,
    ExperimentRegistry,
    UnknownExperiment,
    Variant,
    assign,
    bucket,
    experiment_from_dict,
    in_traffic,
    load_experiment_file,
    record_exposure,
    unit_id_for,
)
from engine.experiments.assignment import variant_bounds
from engine.experiments.eventstore import EventStore

START = datetime(2024, 5, 1, tzinfo=UTC)
STOP = START + timedelta(days=30)
INSIDE = START + timedelta(days=1)


def experiment(**overrides) -> Experiment:
    fields = {
        "name": "exp",
        "start": START,
        "stop": STOP,
        "variants": (Variant(name="control", strategy="popular"), Variant(name="treatment")),
    }
    return Experiment(**{**fields, **overrides})


UNIT = st.text(min_size=1, max_size=40)
SALT = st.text(min_size=1, max_size=20)


# ----------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"variants": (Variant(name="a"),)}, "at least two variants"),
        ({"variants": (Variant(name="a"), Variant(name="a"))}, "must be unique"),
        ({"unit": "device"}, "unit must be one of"),
        ({"stop": START}, "must come before stop"),
        ({"start": datetime(2024, 5, 1)}, "needs a time zone"),
        ({"traffic": 0.0}, r"traffic must be in \(0, 1\]"),
        ({"traffic": 1.5}, r"traffic must be in \(0, 1\]"),
        ({"conversion": "view"}, "conversion must be one of"),
        ({"control": "nope"}, "control 'nope' is not one of"),
        ({"name": "has space"}, "experiment name"),
        ({"msprt_tau": 0}, "msprt_tau must be a positive number"),
    ],
)
def test_invalid_experiments_are_refused_with_a_reason(overrides, message):
    with pytest.raises(ValueError, match=message):
        experiment(**overrides)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"weight": 0}, "weight must be a positive number"),
        ({"weight": -1}, "positive"),
        ({"strategy": "x"}, "strategy"),
    ],
)
def test_invalid_variants_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        Variant(name="v", **fields)


def test_the_json_loader_rejects_unknown_keys_and_round_trips(tmp_path):
    exp = experiment(traffic=0.5, salt="s1", description="d")
    data = exp.to_dict()
    assert experiment_from_dict(data) == exp
    assert exp.salt == "s1" and experiment(salt=None).salt == "exp"  # the salt defaults to the name
    with pytest.raises(ValueError, match=r"unknown experiment keys \['trafic'\]"):
        experiment_from_dict({**data, "trafic": 0.2})
    with pytest.raises(ValueError, match=r"variants\[1\]: unknown keys \['wieght'\]"):
        experiment_from_dict({**data, "variants": [{"name": "a"}, {"name": "b", "wieght": 2}]})
    with pytest.raises(ValueError, match=r"lacks the keys \['stop'\]"):
        experiment_from_dict({k: v for k, v in data.items() if k != "stop"})
    with pytest.raises(ValueError, match="ISO 8601"):
        experiment_from_dict({**data, "start": "yesterday"})
    path = tmp_path / "e.json"
    path.write_text(json.dumps(data))
    assert load_experiment_file(path) == exp
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_experiment_file(path)


def test_the_registry_lives_in_the_store_and_protects_exposed_experiments():
    with EventStore("sqlite://") as store:
        registry = ExperimentRegistry(store)
        exp = experiment()
        registry.create(exp)
        with pytest.raises(ExperimentExists):
            registry.create(exp)
        with pytest.raises(UnknownExperiment, match="no experiment named 'other'"):
            registry.get("other")
        assert registry.get("exp") == exp
        registry.update(experiment(unit="session"))  # no exposures yet: anything goes
        registry.update(experiment())
        record_exposure(store, registry.get("exp"), "u-exposed-1", ts=INSIDE)
        record_exposure(store, registry.get("exp"), "u-exposed-2", ts=INSIDE)
        with pytest.raises(ValueError, match="unit cannot change"):
            registry.update(experiment(unit="session"))
        with pytest.raises(ValueError, match="salt"):
            registry.update(experiment(salt="new"))
        registry.update(experiment(traffic=1.0))
        assert [e.traffic for e in registry.list()] == [1.0]


# ------------------------------------------------------------------------------------------- assignment


@given(SALT, st.sampled_from(["traffic", "variant"]), UNIT)
def test_buckets_are_deterministic_and_in_range(salt, stage, unit):
    b = bucket(salt, stage, unit)
    assert 0 <= b < 10_000
    assert b == bucket(salt, stage, unit)


def test_the_bucket_is_sha256_of_salt_stage_and_unit():
    import hashlib

    expected = int(hashlib.sha256(b"s.variant.u1").hexdigest()[:15], 16) % 10_000
    assert bucket("s", "variant", "u1") == expected


@settings(max_examples=200)
@given(UNIT, SALT, st.floats(0.01, 1.0), st.floats(0.01, 1.0))
def test_raising_traffic_only_adds_units_and_never_moves_one(unit, salt, t1, t2):
    low, high = sorted((t1, t2))
    small, large = experiment(salt=salt, traffic=low), experiment(salt=salt, traffic=high)
    if in_traffic(small, unit):
        assert in_traffic(large, unit)
        assert assign(small, unit) == assign(large, unit)


@given(UNIT, st.lists(st.floats(0.1, 10.0), min_size=2, max_size=5))
def test_every_unit_in_full_traffic_gets_exactly_one_configured_variant(unit, weights):
    exp = experiment(variants=tuple(Variant(name=f"v{i}", weight=w) for i, w in enumerate(weights)))
    assert assign(exp, unit) in exp.variant_names
    bounds = variant_bounds(exp)
    assert bounds == sorted(bounds) and bounds[-1] == 10_000


def test_weights_and_traffic_set_the_shares():
    exp = experiment(
        traffic=0.5, variants=(Variant(name="a", weight=1), Variant(name="b", weight=3)), salt="share-test"
    )
    got = [assign(exp, f"user-{i}") for i in range(40_000)]
    inside = [g for g in got if g is not None]
    assert abs(len(inside) / len(got) - 0.5) < 0.01
    assert abs(inside.count("a") / len(inside) - 0.25) < 0.01


def test_a_new_salt_reshuffles_units():
    a, b = experiment(salt="one"), experiment(salt="two")
    agree = sum(assign(a, f"u{i}") == assign(b, f"u{i}") for i in range(4000))
    assert 0.45 < agree / 4000 < 0.55


def test_recorded_variants_survive_a_weight_change():
    with EventStore("sqlite://") as store:
        even = experiment()
        units = [f"u{i}" for i in range(300)]
        before = {u: record_exposure(store, even, u, ts=INSIDE) for u in units}
        assert set(before.values()) == {"control", "treatment"}
        # now nearly all new traffic goes to control; exposed units keep what they had
        skewed = experiment(variants=(Variant(name="control", weight=1), Variant(name="treatment", weight=1e-9)))
        assert all(record_exposure(store, skewed, u, ts=INSIDE) == before[u] for u in units)
        assert {assign(skewed, f"new{i}") for i in range(200)} == {"control"}


@given(st.lists(UNIT, min_size=1, max_size=20, unique=True))
@settings(max_examples=25, deadline=None)
def test_record_exposure_agrees_with_assign_for_new_units(units):
    exp = experiment(traffic=0.6)
    with EventStore("sqlite://") as store:
        for u in units:
            assert record_exposure(store, exp, u, ts=INSIDE) == assign(exp, u)


def test_no_exposure_outside_the_experiment_dates():
    with EventStore("sqlite://") as store:
        exp = experiment()
        assert record_exposure(store, exp, "u1", ts=START - timedelta(seconds=1)) is None
        assert record_exposure(store, exp, "u1", ts=STOP) is None
        assert store.count_exposures("exp") == {}
        assert record_exposure(store, exp, "u1", ts=START) in exp.variant_names


def test_the_unit_is_the_user_or_the_session():
    assert unit_id_for(experiment(), user_id="u", session_id="s") == "u"
    assert unit_id_for(experiment(unit="session"), user_id="u", session_id="s") == "s"
