"""Image ids over HTTP: every id the API issues is accepted by every endpoint that takes one, and a client cannot
mint one (unsigned, altered or absurd ids are 404 saying what to do, never 5xx)."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from engine.serving.image_ids import ImageIdCodec, load_or_create_key
from features.ids import MAX_ID_LENGTH
from tests.api.experiment_fixture import ADMIN, EXPERIMENT, TOKEN

DURING = "2024-05-03T12:00:00Z"


@pytest.fixture
def client(trained_artifacts, tmp_path):
    root, _ = trained_artifacts
    settings = Settings(
        artifacts=root, admin_token=TOKEN, database_url=f"sqlite:///{tmp_path}/events.db", client_clock=True
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def treatment_set(client, shopper_ids) -> dict:
    """The set of the first shopper in the experiment's personalised arm."""
    assert client.post("/v1/admin/experiments", json=EXPERIMENT, headers=ADMIN).status_code == 201
    for user in shopper_ids[:40]:
        body = client.get(f"/v1/users/{user}/image-set", params={"n": 8, "at": DURING}).json()
        if body["variant"] == "treatment":
            return body
    raise AssertionError("no shopper of the first 40 is in the treatment arm")


def test_a_generated_id_is_accepted_as_a_click_and_renders(client, shopper_ids):
    body = treatment_set(client, shopper_ids)
    assert body["strategy"] == "personalised"
    images = body["images"]
    assert all(img["explanation"]["optimised"] for img in images)
    assert max(len(img["image_id"]) for img in images) <= MAX_ID_LENGTH
    image = images[0]
    click = {
        "client_event_id": uuid.uuid4().hex,
        "kind": "click",
        "ts": DURING,
        "user_id": body["user_id"],
        "image_id": image["image_id"],
        "item_id": image["nearest_items"][0]["item_id"],
    }
    r = client.post("/v1/events", json={"events": [click]})
    assert r.status_code == 200, r.text
    assert r.json()["results"] == [{"client_event_id": click["client_event_id"], "status": "stored"}]
    report = client.get(f"/v1/experiments/{EXPERIMENT['name']}/report", params={"as_of": DURING}).json()
    assert next(v for v in report["variants"] if v["name"] == "treatment")["clicks"] == 1
    png = client.get(f"/v1/images/{image['image_id']}.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"


def test_ids_a_client_made_are_404_and_say_what_to_do(client, shopper_ids):
    user = shopper_ids[0]
    image_id = client.get(f"/v1/users/{user}/image-set", params={"n": 1}).json()["images"][0]["image_id"]
    bundle, condition, seed, latent, tag = image_id.split(".")
    other_seed = f"{int(seed, 16) ^ 1:016x}"
    minted = [
        f"{bundle}.{condition}.{seed}.{latent}",  # unsigned
        f"{bundle}.{condition}.{other_seed}.{latent}.{tag}",  # another seed under the same tag
        f"{bundle}.{condition}.{seed}.{tag}",  # the latent key left out
        f"{bundle}.{'9' * 20}.{seed}.{latent}.{tag}",  # an absurd condition
        image_id + "x" * (MAX_ID_LENGTH + 10),  # too long
        f"{bundle}.{condition}.{seed}.{latent}.{tag[:-1]}{'A' if tag[-1] != 'A' else 'B'}",  # another tag
    ]
    for bad in minted:
        r = client.get(f"/v1/images/{bad}.png")
        assert r.status_code == 404, (bad, r.text)
        assert r.json()["detail"].endswith("request a new image set"), r.text


def test_an_absurd_condition_signed_with_the_servers_key_is_404_not_503(client, trained_artifacts):
    # as if the key leaked: the condition number is checked as a Python int, never cast to int64
    root, version = trained_artifacts
    codec = ImageIdCodec(version, client.app.state.service.personaliser.conditions.codes, load_or_create_key(root))
    bundle, _, seed, _ = codec.encode(0, 1).split(".")
    payload = f"{bundle}.{'9' * 20}.{seed}"  # more digits than any condition table: not an id's shape at all
    r = client.get(f"/v1/images/{payload}.{codec._tag(payload)}.png")
    assert r.status_code == 404 and "is not an image id this service issued" in r.json()["detail"]
    payload = f"{bundle}.{'9' * 9}.{seed}"
    r = client.get(f"/v1/images/{payload}.{codec._tag(payload)}.png")
    assert r.status_code == 404 and "condition this bundle does not have" in r.json()["detail"]


def test_ids_signed_with_another_image_key_are_refused(trained_artifacts):
    root, _ = trained_artifacts
    first, second = "first-image-key-0123456789", "second-image-key-0123456789"
    ids = {}
    for key in (first, second):
        with TestClient(create_app(Settings(artifacts=root, image_key=key))) as c:
            ids[key] = c.get("/v1/users/never-seen-3/image-set", params={"n": 1}).json()["images"][0]["image_id"]
    assert ids[first] != ids[second]  # the same image, signed with each key
    with TestClient(create_app(Settings(artifacts=root, image_key=second))) as c:
        assert c.get(f"/v1/images/{ids[second]}.png").status_code == 200
        r = c.get(f"/v1/images/{ids[first]}.png")
        assert r.status_code == 404 and "signature" in r.json()["detail"]


def test_the_image_key_is_never_shown():
    settings = Settings(image_key="a-very-secret-image-key")
    assert "a-very-secret-image-key" not in repr(settings) + str(settings.model_dump())
    with pytest.raises(ValueError, match="at least 16 characters") as caught:
        Settings(image_key="short-secret")
    assert "short-secret" not in str(caught.value)


def test_with_redis_every_worker_renders_every_optimised_image(
    trained_artifacts, redis_url, redis_cleanup, shopper_ids
):
    settings = Settings(artifacts=trained_artifacts[0], redis_url=redis_url, image_ttl_seconds=60)
    with TestClient(create_app(settings)) as one:
        user = shopper_ids[1]
        images = one.get(f"/v1/users/{user}/image-set", params={"n": 2}).json()["images"]
        redis_cleanup.extend(f"vitrine:latent:{img['image_id'].split('.')[3]}" for img in images)
        png = one.get(f"/v1/images/{images[1]['image_id']}.png").content
    assert images[1]["explanation"]["optimised"]
    with TestClient(create_app(settings)) as other:  # another worker: an empty PNG cache and latent store
        assert other.get(f"/v1/images/{images[1]['image_id']}.png").content == png


def test_every_layer_takes_ids_of_the_same_length():
    """One constant, features.ids.MAX_ID_LENGTH: the event store's columns and records, the API's schemas and
    path patterns, and the readers' validation all take an id of exactly that length, and refuse a longer one."""
    import re

    import pandas as pd
    import sqlalchemy as sa

    from api.routers.events import ClickIn
    from api.routers.images import ID_PATTERN
    from api.schemas import SessionEventIn
    from engine.experiments.records import Event, ExposureIn
    from engine.experiments.tables import assignments_t, events_t, exposures_t
    from features.validation import validate_catalogue

    longest, too_long = "a" * MAX_ID_LENGTH, "a" * (MAX_ID_LENGTH + 1)
    widths = {
        (t.name, c.name): c.type.length
        for t in (assignments_t, exposures_t, events_t)
        for c in t.columns
        if isinstance(c.type, sa.String) and not isinstance(c.type, sa.Text) and c.name != "kind"
    }
    assert set(widths.values()) == {MAX_ID_LENGTH}, widths
    assert Event(client_event_id=longest, kind="click", ts=0, user_id=longest, image_id=longest)
    with pytest.raises(ValueError, match=str(MAX_ID_LENGTH)):
        Event(client_event_id="e", kind="click", ts=0, user_id="u", image_id=too_long)
    assert ExposureIn(unit_id=longest, ts=0, exposure_id=longest)
    ClickIn(client_event_id=longest, kind="click", user_id=longest, image_id=longest)
    SessionEventIn(item_id=longest, event_type="view")
    for model, fields in (
        (ClickIn, {"client_event_id": "e", "kind": "click", "session_id": "s", "image_id": too_long}),
        (SessionEventIn, {"item_id": too_long, "event_type": "view"}),
    ):
        with pytest.raises(ValueError, match=f"at most {MAX_ID_LENGTH} characters"):
            model(**fields)
    assert re.match(ID_PATTERN, longest) and not re.match(ID_PATTERN, too_long)
    catalogue = pd.DataFrame({"item_id": [longest, too_long], "class": ["dress", "dress"]})
    kept, report = validate_catalogue(catalogue, source="catalogue.csv", attributes=("class",))
    assert kept["item_id"].tolist() == [longest] and report.rows_rejected == 1
