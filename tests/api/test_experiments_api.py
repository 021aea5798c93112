"""The experiments and events HTTP contract: admin guard, strict configs, idempotent events, reports."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from tests.api.experiment_fixture import ADMIN, EXPERIMENT, TOKEN


@pytest.fixture
def client(tmp_path):
    settings = Settings(artifacts=tmp_path / "no-bundles", admin_token=TOKEN, database_url=f"sqlite:///{tmp_path}/e.db")
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def test_admin_endpoints_need_the_token(client):
    assert client.post("/v1/admin/experiments", json=EXPERIMENT).status_code == 401
    r = client.post("/v1/admin/experiments", json=EXPERIMENT, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 403 and "not valid" in r.json()["detail"]
    assert client.put("/v1/admin/experiments/pvp", json=EXPERIMENT).status_code == 401


def test_admin_endpoints_are_off_without_a_configured_token(tmp_path):
    settings = Settings(artifacts=tmp_path, database_url=f"sqlite:///{tmp_path}/e.db")
    with TestClient(create_app(settings)) as c:
        r = c.post("/v1/admin/experiments", json=EXPERIMENT, headers=ADMIN)
        assert r.status_code == 403
        assert "VITRINE_ADMIN_TOKEN" in r.json()["detail"]


def test_create_list_update_and_report(client):
    r = client.post("/v1/admin/experiments", json=EXPERIMENT, headers=ADMIN)
    assert r.status_code == 201, r.text
    assert r.json()["salt"] == "pvp" and r.json()["control"] == "control"
    assert client.post("/v1/admin/experiments", json=EXPERIMENT, headers=ADMIN).status_code == 409
    assert [e["name"] for e in client.get("/v1/experiments").json()] == ["pvp"]
    r = client.put("/v1/admin/experiments/pvp", json={**EXPERIMENT, "traffic": 0.5}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["traffic"] == 0.5
    assert client.put("/v1/admin/experiments/other", json=EXPERIMENT, headers=ADMIN).status_code == 409  # name clash
    r = client.put("/v1/admin/experiments/other", json={**EXPERIMENT, "name": "other"}, headers=ADMIN)
    assert r.status_code == 404
    r = client.get("/v1/experiments/pvp/report", params={"as_of": "2024-05-03T00:00:00Z"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [v["exposures"] for v in body["variants"]] == [0, 0]
    assert body["comparisons"][0]["absolute_lift"] is None
    assert len(body["daily"]) == 2
    chart = client.get("/v1/experiments/pvp/chart.png")
    assert chart.status_code == 200 and chart.content.startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({**EXPERIMENT, "trafic": 0.5}, "trafic: Extra inputs are not permitted"),
        ({**EXPERIMENT, "stop": "2024-04-01T00:00:00Z"}, "must come before stop"),
        ({**EXPERIMENT, "stop": "2024-06-01T00:00:00"}, "stop: Value error, must be an RFC 3339 date-time with its"),
        ({**EXPERIMENT, "variants": [{"name": "a"}]}, "variants: List should have at least 2 items"),
        ({**EXPERIMENT, "variants": [{"name": "a", "weight": -1}, {"name": "b"}]}, "weight: Input should be greater"),
        ({**EXPERIMENT, "variants": [{"name": "a", "weight": 1e300}, {"name": "b"}]}, "weight: Input should be less"),
        ({**EXPERIMENT, "variants": [{"name": "a"}, {"name": "a"}]}, "variant names must be unique"),
        ({**EXPERIMENT, "start": "0001-01-01T00:00:00+01:00"}, "out of range"),
        ([1, 2], "valid dictionary"),
    ],
)
def test_bad_experiments_are_422_with_what_to_fix(client, body, fragment):
    r = client.post("/v1/admin/experiments", json=body, headers=ADMIN)
    assert r.status_code == 422
    assert fragment in r.json()["detail"]


def test_unknown_experiment_is_404(client):
    r = client.get("/v1/experiments/nope/report")
    assert r.status_code == 404 and "no experiment named 'nope'" in r.json()["detail"]
    assert client.get("/v1/experiments/bad%20name/report").status_code == 422


def test_events_are_idempotent_and_bad_ones_named(client):
    events = [
        {
            "client_event_id": "e1",
            "kind": "click",
            "user_id": "u1",
            "image_id": "img1",
            "ts": datetime.now(UTC).isoformat(),
        },
        {"client_event_id": "e2", "kind": "purchase", "user_id": "u1", "item_id": "i1", "revenue": 19.5},
    ]
    r = client.post("/v1/events", json={"events": events})
    assert r.status_code == 200, r.text
    assert r.json()["stored"] == 2 and r.json()["duplicates"] == 0
    r = client.post("/v1/events", json={"events": [events[1], {**events[0], "client_event_id": "e3"}]})
    assert r.json()["results"] == [
        {"client_event_id": "e2", "status": "duplicate"},
        {"client_event_id": "e3", "status": "stored"},
    ]
    bad = [
        events[0],
        {"client_event_id": "b1", "kind": "purchase", "user_id": "u1", "item_id": "i1"},
        {"client_event_id": "b2", "kind": "view", "session_id": "s", "revenue": 3.0, "item_id": "i"},
    ]
    r = client.post("/v1/events", json={"events": bad})
    assert r.status_code == 422  # the schema says what each kind carries
    assert "events.1.purchase.revenue: Field required" in r.json()["detail"]
    assert "events.2.view.revenue: Extra inputs are not permitted" in r.json()["detail"]
    old = {**events[0], "client_event_id": "o1", "ts": "2024-05-02T10:00:00Z"}
    r = client.post("/v1/events", json={"events": [old]})
    assert r.status_code == 422
    assert [(e["index"], e["client_event_id"]) for e in r.json()["errors"]] == [(0, "o1")]
    assert "the oldest time this service accepts" in r.json()["errors"][0]["msg"]
    r = client.post("/v1/events", json={"events": [{"client_event_id": "x", "kind": "like", "user_id": "u"}]})
    assert r.status_code == 422 and "events.0: Input tag 'like' found using 'kind'" in r.json()["detail"]
    r = client.post("/v1/events", json={"events": [{**events[0], "colour": "red"}]})
    assert r.status_code == 422 and "colour" in r.json()["detail"]
    assert client.post("/v1/events", json={"events": []}).status_code == 422


def test_an_unreachable_database_is_503_not_a_crash(tmp_path):
    settings = Settings(artifacts=tmp_path, database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    with TestClient(create_app(settings)) as c:
        r = c.get("/v1/experiments")
        assert r.status_code == 503 and "VITRINE_DATABASE_URL" in r.json()["detail"]
