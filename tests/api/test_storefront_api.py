"""The image-set endpoint under an experiment: variant assignment, the popular arm's catalogue photos, and
the exposure (variant, bundle version, images shown) recorded for each set served."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from engine.experiments.eventstore import EventStore, exposures_t
from features.pseudonyms import load_or_create_keyring
from tests.api.experiment_fixture import ADMIN, EXPERIMENT, TOKEN

DURING = "2024-05-03T12:00:00Z"


@pytest.fixture
def db_url(tmp_path):
    return f"sqlite:///{tmp_path}/events.db"


@pytest.fixture
def client(trained_artifacts, db_url):
    root, _ = trained_artifacts
    settings = Settings(artifacts=root, admin_token=TOKEN, database_url=db_url, client_clock=True)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def test_without_a_running_experiment_the_set_is_the_personalised_one(client, trained_artifacts, shopper_ids):
    user = shopper_ids[:1][0]
    body = client.get(f"/v1/users/{user}/image-set", params={"n": 4}).json()
    assert body["strategy"] == "personalised"
    assert (body["experiment"], body["variant"], body["exposure_id"]) == (None, None, None)
    assert {img["source"] for img in body["images"]} == {"generated"}
    assert client.post("/v1/admin/experiments", json=EXPERIMENT, headers=ADMIN).status_code == 201
    before = client.get(f"/v1/users/{user}/image-set", params={"n": 4, "at": "2024-04-30T23:59:59Z"}).json()
    assert before["experiment"] is None and before["images"] == body["images"]  # not started yet: as before


def test_each_variant_serves_its_set_and_records_the_exposure(client, trained_artifacts, db_url, shopper_ids):
    assert client.post("/v1/admin/experiments", json=EXPERIMENT, headers=ADMIN).status_code == 201
    users = shopper_ids[:30]
    bodies = {}
    for u in users:
        r = client.get(f"/v1/users/{u}/image-set", params={"n": 5, "neighbours": 3, "at": DURING})
        assert r.status_code == 200, r.text
        bodies[u] = r.json()
    variants = {b["variant"] for b in bodies.values()}
    assert variants == {"control", "treatment"}
    popular_sets = set()
    for b in bodies.values():
        assert b["experiment"] == "pvp"
        if b["variant"] == "control":
            assert b["strategy"] == "popular"
            assert all(img["source"] == "catalogue" for img in b["images"])
            for img in b["images"]:
                # a real catalogue photo with its item, and "shop similar" items starting with that item
                assert img["url"].endswith(f"/v1/items/{img['item_id']}/image.png")
                assert img["nearest_items"][0]["item_id"] == img["item_id"]
                assert len(img["nearest_items"]) == 3
                assert img["condition"] == img["nearest_items"][0]["attributes"]
            popular_sets.add(tuple(img["item_id"] for img in b["images"]))
        else:
            assert b["strategy"] == "personalised"
            assert all(img["source"] == "generated" for img in b["images"])
    assert len(popular_sets) == 1  # the same popular set for every shopper
    photo = client.get(next(iter(bodies.values()))["images"][0]["url"].replace("http://testserver", ""))
    assert photo.status_code == 200
    # the exposures hold the variant, the bundle version and the image ids each shopper was shown
    with EventStore(db_url) as store, store._read() as conn:
        rows = conn.execute(sa.select(exposures_t).where(exposures_t.c.experiment == "pvp")).mappings().all()
    assert len(rows) == len(users)
    pseudonyms = load_or_create_keyring(trained_artifacts[0])
    by_pseudonym = {pseudonyms(u): b for u, b in bodies.items()}  # exposures hold pseudonyms, never the ids
    for row in rows:
        body = by_pseudonym[row["user_id"]]
        assert row["variant"] == body["variant"]
        assert row["bundle_version"] == body["bundle_version"] == trained_artifacts[1]
        assert json.loads(row["image_ids"]) == [img["image_id"] for img in body["images"]]
        assert row["exposure_id"] == body["exposure_id"]
    report = client.get("/v1/experiments/pvp/report", params={"as_of": "2024-05-10T00:00:00Z"}).json()
    assert sum(v["exposures"] for v in report["variants"]) == len(users)


def test_a_unit_keeps_its_variant_and_a_retried_exposure_counts_once(client, trained_artifacts, shopper_ids):
    assert client.post("/v1/admin/experiments", json={**EXPERIMENT, "traffic": 0.3}, headers=ADMIN).status_code == 201
    users = shopper_ids[:40]
    first = {u: client.get(f"/v1/users/{u}/image-set", params={"n": 2, "at": DURING}).json()["variant"] for u in users}
    inside = {u: v for u, v in first.items() if v is not None}
    assert 0 < len(inside) < len(users)
    # raise the traffic and flip the weights: the exposed units keep their variants
    bigger = {
        **EXPERIMENT,
        "traffic": 1.0,
        "variants": [{**EXPERIMENT["variants"][0], "weight": 9}, EXPERIMENT["variants"][1]],
    }
    assert client.put("/v1/admin/experiments/pvp", json=bigger, headers=ADMIN).status_code == 200
    for u, v in inside.items():
        body = client.get(f"/v1/users/{u}/image-set", params={"n": 2, "at": DURING, "exposure_id": f"x-{u}"}).json()
        assert body["variant"] == v
        again = client.get(f"/v1/users/{u}/image-set", params={"n": 2, "at": DURING, "exposure_id": f"x-{u}"}).json()
        assert again["variant"] == v
    report = client.get("/v1/experiments/pvp/report", params={"as_of": "2024-05-10T00:00:00Z"}).json()
    records = sum(v["exposure_events"] for v in report["variants"])
    assert records == 2 * len(inside)  # the first visit, then the retried one once


def test_the_request_time_needs_the_client_clock_and_experiments_must_exist(trained_artifacts, db_url, shopper_ids):
    root, _ = trained_artifacts
    user = shopper_ids[:1][0]
    with TestClient(create_app(Settings(artifacts=root, database_url=db_url))) as c:
        r = c.get(f"/v1/users/{user}/image-set", params={"at": DURING})
        assert r.status_code == 422 and "VITRINE_CLIENT_CLOCK" in r.json()["detail"]
        r = c.get(f"/v1/users/{user}/image-set", params={"experiment": "nope"})
        assert r.status_code == 404 and "no experiment named 'nope'" in r.json()["detail"]


def test_the_class_filter_applies_to_the_popular_arm_too(client, trained_artifacts, shopper_ids):
    assert client.post("/v1/admin/experiments", json=EXPERIMENT, headers=ADMIN).status_code == 201
    users = shopper_ids[:30]
    control = None
    for u in users:
        body = client.get(f"/v1/users/{u}/image-set", params={"n": 4, "at": DURING}).json()
        if body["variant"] == "control":
            control = (u, body)
            break
    assert control is not None, "none of 30 shoppers was assigned to control"
    user, unfiltered = control
    # keep only the class of the last popular photo: the filtered set must differ and hold only that class
    wanted = unfiltered["images"][-1]["condition"]["class"]
    body = client.get(f"/v1/users/{user}/image-set", params={"n": 4, "at": DURING, "classes": wanted}).json()
    assert body["variant"] == "control"
    assert [img["condition"]["class"] for img in body["images"]] == [wanted] * 4
    assert all(it["attributes"]["class"] == wanted for img in body["images"] for it in img["nearest_items"])
    assert all(len(img["nearest_items"]) > 1 for img in body["images"])  # "shop similar" still has items
