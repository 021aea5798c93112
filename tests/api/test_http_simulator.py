"""The world simulator through the real HTTP API (in process, over FastAPI's TestClient): every exposure and
conversion the simulated shoppers make is counted once by the report, and the true rates are known."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from engine.experiments.http_api import ApiClient
from engine.experiments.http_simulation import HttpSimulationSettings, consistency_checks, simulate_http
from engine.world import load_tastes

TOKEN = "sim-token"


@pytest.fixture
def api(trained_artifacts, tmp_path):
    root, _ = trained_artifacts
    settings = Settings(
        artifacts=root, admin_token=TOKEN, client_clock=True, database_url=f"sqlite:///{tmp_path}/events.db"
    )
    with TestClient(create_app(settings)) as client:
        yield ApiClient(client, admin_token=TOKEN)


def test_http_simulation_counts_every_exposure_and_conversion(api, demo_store):
    tastes = load_tastes(demo_store)
    settings = HttpSimulationSettings(shoppers=60, days=3, n_images=4, neighbours=2, aa_runs=0, aa_http_runs=1)
    summary = simulate_http(api, tastes, settings, show_progress=False)
    text = summary.render()
    consistency = [(what, ok) for what, ok in summary.checks if "report counts" in what]
    assert len(consistency) == 4, text  # two arms of the A/A run, two of the A/B run
    assert all(ok for _, ok in consistency), text
    report = summary.ab_report
    assert report is not None
    assert sum(v["exposures"] for v in report["variants"]) == 60
    assert {v["strategy"] for v in report["variants"]} == {"popular", "personalised"}
    assert "true conversion rates" in text and "check " in text
    assert text.splitlines()[-1] in ("overall: PASS", "overall: FAIL")


def test_the_report_would_notice_a_lost_conversion():
    from engine.experiments.http_simulation import HttpRun
    from engine.experiments.shoppers import RunOutcome

    report = {"variants": [{"name": "a", "exposures": 10, "conversions": 2}]}
    run = HttpRun("x", report, RunOutcome(exposed={"a": 10}, converted={"a": 3}), requests=1, seconds=1.0)
    [(what, ok)] = consistency_checks(run)
    assert not ok and "report counts 10 exposed and 2 converted, the shoppers did 10 and 3" in what
