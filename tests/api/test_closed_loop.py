"""The closed loop through the HTTP API (each arm an app on FastAPI's TestClient, with its own registry and
event store): the retrained arm serves a new bundle every day and comes to know the new shoppers; the frozen
arm does neither; the report's per-day figures come with intervals around them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from engine.evaluation.closed_loop import FROZEN, RETRAINED, run_closed_loop
from engine.experiments.http_api import ApiClient
from engine.experiments.loop import LoopSettings, make_population, schedule
from engine.experiments.loop_report import render_loop_report
from engine.world import load_tastes

TOKEN = "loop-token"


@contextmanager
def in_process_api(artifacts: Path, database_url: str) -> Iterator[ApiClient]:
    settings = Settings(artifacts=artifacts, admin_token=TOKEN, client_clock=True, database_url=database_url)
    with TestClient(create_app(settings)) as client:
        yield ApiClient(client, admin_token=TOKEN)


SETTINGS = LoopSettings(
    days=3, shoppers=24, new_share=0.5, visit_rate=0.7, n_images=4, neighbours=2, compare_from=2, catch_up_day=2
)


@pytest.fixture(scope="module")
def loop(trained_artifacts, demo_store, tmp_path_factory):
    root, _ = trained_artifacts
    return run_closed_loop(
        demo_store,
        root,
        SETTINGS,
        seeds=[3],
        workdir=tmp_path_factory.mktemp("loop"),
        api=in_process_api,
        show_progress=False,
    )


def test_the_retrained_arm_serves_a_new_bundle_each_day_and_the_frozen_arm_does_not(loop):
    [run] = loop.runs
    served = {arm: [] for arm in (RETRAINED, FROZEN)}
    for day in range(1, SETTINGS.days + 1):
        for arm in served:
            versions = {s.bundle_version for v in run.visits if v.arm == arm and v.day == day for s in v.sets}
            assert len(versions) == 1, (arm, day, versions)
            served[arm] += versions
    assert served[FROZEN] == [loop.starting_bundle] * SETTINGS.days
    assert served[RETRAINED][0] == loop.starting_bundle
    assert len(set(served[RETRAINED])) == SETTINGS.days  # a new bundle after every night
    assert [(n.arm, n.day) for n in run.nights] == [(RETRAINED, d) for d in range(1, SETTINGS.days)]


def test_after_a_night_the_retrained_arm_knows_the_new_shoppers_who_came(loop):
    [run] = loop.runs
    seen_before: set[int] = set()
    checked = 0
    for day in range(1, SETTINGS.days + 1):
        today = [v for v in run.visits if v.day == day]
        for v in today:
            first = v.sets[0].strategy  # a fresh session: only the bundle can know the shopper
            if not v.new:
                assert first == "personalised", v
            elif v.arm == FROZEN or v.shopper not in seen_before:
                assert first == "cold_start", v
            else:
                assert first == "personalised", v
                checked += 1
        seen_before |= {v.shopper for v in today if v.arm == RETRAINED and v.events}
    assert checked >= 3  # new shoppers who came back after a night in which their events were trained on


def test_the_arms_see_the_same_visits(loop):
    [run] = loop.runs
    visits = {arm: [(v.day, v.shopper, v.new) for v in run.visits if v.arm == arm] for arm in (RETRAINED, FROZEN)}
    assert visits[RETRAINED] == visits[FROZEN]
    assert {new for _, _, new in visits[FROZEN]} == {True, False}


def test_the_report_has_per_day_figures_inside_their_intervals(loop):
    report = loop.report
    assert [row["day"] for row in report["days"]] == [1, 2, 3]
    for row in report["days"]:
        for arm in (RETRAINED, FROZEN):
            f = row[arm]
            assert f["exposures"] > 0
            for name in ("match_all", "match_known", "match_new", "conversion", "revenue_per_exposure"):
                lo, hi = f[f"{name}_ci"]
                assert lo - 1e-9 <= f[name] <= hi + 1e-9, (row["day"], arm, name, f[name], lo, hi)
            assert 0 <= f["match_all"] <= 1
    first = report["days"][0]
    assert first[RETRAINED]["match_all"] == pytest.approx(first[FROZEN]["match_all"])  # same bundle, same day
    cmp = report["comparison"]
    assert cmp[RETRAINED]["exposures"] == cmp[FROZEN]["exposures"] > 0
    assert 0 < cmp["p_value_paired_permutation"] <= 1
    text = render_loop_report(report)
    assert "goal " in text and "paired permutation p" in text


def test_population_and_visits_are_seeded(demo_store):
    tastes = load_tastes(demo_store)
    population = make_population(tastes, SETTINGS)
    assert sum(s.new for s in population) == 12
    assert {s.user_id for s in population if not s.new} <= set(tastes)
    assert not {s.user_id for s in population if s.new} & set(tastes)
    assert [s.user_id for s in make_population(tastes, SETTINGS)] == [s.user_id for s in population]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    a, b = schedule(population, SETTINGS, start), schedule(population, SETTINGS, start)
    assert [[(v.shopper.index, v.ts) for v in day] for day in a] == [
        [(v.shopper.index, v.ts) for v in day] for day in b
    ]
    rate = np.mean([len(day) for day in a]) / len(population)
    assert 0.3 < rate < 1.0


def test_the_cli_runs_the_loop_on_subprocess_servers(trained_artifacts, demo_store, tmp_path, capsys):
    from engine.cli import main

    root, _ = trained_artifacts
    out = tmp_path / "loop.json"
    args = ["--days", "2", "--shoppers", "16", "--visit-rate", "0.8", "--no-progress", "--out", str(out)]
    assert main(["experiments", "simulate", "loop", "--store", str(demo_store), "--artifacts", str(root), *args]) == 0
    assert "paired permutation p" in capsys.readouterr().out
    report = json.loads(out.read_text())
    [night] = report["nights"]
    assert night["arm"] == RETRAINED and night["served"] == report["starting_bundle"] != night["next"]
    assert report["days"][1][RETRAINED]["bundle_versions"] == [night["next"]]
    assert report["days"][1][FROZEN]["bundle_versions"] == [report["starting_bundle"]]
