"""Faults over HTTP: the event store failing during an image-set request (200, the control arm, and the response
says the experiment was skipped) and a full disk during an event write (503 with Retry-After, nothing stored)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from tests.api.experiment_fixture import ADMIN, EXPERIMENT, TOKEN
from tests.fault_injection import FailingStore, fill, pages_capped, tiny_filesystem

DURING = "2024-05-03T12:00:00Z"


def _client(artifacts, database_url: str) -> TestClient:
    # the experiment list read on every request, so that each request meets the store's failure
    settings = Settings(
        artifacts=artifacts,
        admin_token=TOKEN,
        database_url=database_url,
        client_clock=True,
        experiments_refresh_seconds=0,
    )
    return TestClient(create_app(settings), raise_server_exceptions=False)


def _image_set(client: TestClient, user: str) -> dict:
    r = client.get(f"/v1/users/{user}/image-set", params={"n": 4, "neighbours": 2, "at": DURING})
    assert r.status_code == 200, r.text
    return r.json()


def _exposures(client: TestClient) -> int:
    report = client.get("/v1/experiments/pvp/report", params={"as_of": "2024-05-10T00:00:00Z"}).json()
    return sum(v["exposures"] for v in report["variants"])


@pytest.mark.parametrize("broken", ["record_exposures", "assignment", "load_experiments"])
def test_an_image_set_while_the_store_fails_is_the_control_arm_and_says_so(trained_artifacts, tmp_path, broken):
    with _client(trained_artifacts[0], f"sqlite:///{tmp_path}/events.db") as client:
        assert client.post("/v1/admin/experiments", json=EXPERIMENT, headers=ADMIN).status_code == 201
        users = [f"shopper-{i:03d}" for i in range(16)]
        variants = {u: _image_set(client, u)["variant"] for u in users}
        assert set(variants.values()) == {"control", "treatment"}
        exposed = _exposures(client)
        arms = client.app.state.service.experiments
        arms.events = FailingStore(arms.events)  # the database goes away after the experiment list was read
        arms.events.failing = {broken}
        for user in users:  # a control shopper never sees generated (treatment) images; no one does meanwhile
            body = _image_set(client, user)
            assert body["strategy"] == "popular"
            assert {img["source"] for img in body["images"]} == {"catalogue"}
            assert (body["experiment"], body["variant"], body["exposure_id"]) == (None, None, None)
            assert "event store did not answer" in body["experiment_skipped"]
            assert "control arm 'control'" in body["experiment_skipped"]
        assert _exposures(client) == exposed  # nothing recorded while the store failed
        arms.events.failing = set()
        control = next(u for u, v in variants.items() if v == "control")
        body = _image_set(client, control)
        assert (body["variant"], body["experiment_skipped"]) == ("control", None)


def _events(n: int, tag: str) -> dict:
    return {
        "events": [
            {"client_event_id": f"{tag}-{i:04d}", "kind": "click", "user_id": f"u{i}", "image_id": "img", "ts": DURING}
            for i in range(n)
        ]
    }


def _assert_full_then_stored_once_there_is_room(client: TestClient, make_room) -> None:
    store = client.app.state.events
    before = store.count_events()
    r = client.post("/v1/events", json=_events(400, "batch"))
    assert r.status_code == 503, r.text
    assert r.headers["Retry-After"] == "5"
    assert "database or disk is full" in r.json()["detail"] and "retry" in r.json()["detail"]
    assert store.count_events() == before  # all or nothing: none of the 400
    make_room()
    r = client.post("/v1/events", json=_events(400, "batch"))  # the client retries the same batch
    assert r.status_code == 200 and r.json()["stored"] == 400
    assert store.count_events() == before + 400


def test_an_event_batch_on_a_full_disk_is_503_and_stores_nothing(tmp_path):
    with tiny_filesystem() as mount, _client(tmp_path, f"sqlite:///{mount}/events.db") as client:
        client.post("/v1/events", json=_events(5, "warm"))  # the database and its WAL exist before the disk fills
        filler = fill(mount)
        _assert_full_then_stored_once_there_is_room(client, filler.unlink)


def test_an_event_batch_past_the_database_size_limit_is_503_and_stores_nothing(tmp_path):
    with _client(tmp_path, f"sqlite:///{tmp_path}/events.db") as client:
        client.post("/v1/events", json=_events(5, "warm"))
        with pages_capped(client.app.state.events) as lift:
            _assert_full_then_stored_once_there_is_room(client, lift)
