"""The HTTP contract: image sets, images, items, health; bad input is a 4xx that says what to fix."""

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from api.settings import Settings
from engine.serving.image_ids import ImageIdCodec, load_or_create_key


@pytest.fixture(scope="module")
def client(trained_artifacts):
    root, _ = trained_artifacts
    with TestClient(create_app(Settings(artifacts=root)), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def known_user(shopper_ids) -> str:
    """A shopper the bundle knows, by the shop's id."""
    return shopper_ids[0]


def test_health_names_the_serving_bundle(client, trained_artifacts):
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "bundle_version": trained_artifacts[1], "detail": None}


def test_the_app_overrides_no_dependency(client):
    """Routes read the app's settings from its state: any ``dependency_overrides`` entry makes FastAPI rebuild
    every route's dependency tree on each request (a fifth of a cached set's CPU when it was one)."""
    assert client.app.dependency_overrides == {}
    assert client.app.state.settings.artifacts.exists()


def test_image_set_for_a_known_user(client, trained_artifacts, known_user):
    user = known_user
    r = client.get(f"/v1/users/{user}/image-set", params={"n": 6, "neighbours": 3})
    assert r.status_code == 200
    body = r.json()
    assert body["strategy"] == "personalised"
    assert body["bundle_version"] == trained_artifacts[1]
    images = body["images"]
    assert len(images) == 6
    assert len({i["image_id"] for i in images}) == 6
    for img in images:
        assert set(img["condition"]) == {"class", "colour", "pattern"}
        assert 0.0 <= img["score"] <= 1.0
        assert len(img["nearest_items"]) == 3
        sims = [n["similarity"] for n in img["nearest_items"]]
        assert sims == sorted(sims, reverse=True)


def test_class_filter_limits_images_and_their_items(client, trained_artifacts, known_user):
    user = known_user
    # one class the shopper's unfiltered set shows, plus one of the cold-start set's other classes
    first = client.get(f"/v1/users/{user}/image-set", params={"n": 8}).json()["images"][0]["condition"]["class"]
    cold = client.get("/v1/users/unknown-x/image-set", params={"n": 8}).json()["images"]
    allowed = [first, *sorted({img["condition"]["class"] for img in cold} - {first})[:1]]
    r = client.get(f"/v1/users/{user}/image-set", params={"n": 6, "classes": ",".join(allowed)})
    assert r.status_code == 200, r.text
    for img in r.json()["images"]:
        assert img["condition"]["class"] in allowed
        assert img["nearest_items"] and all(it["attributes"]["class"] in allowed for it in img["nearest_items"])
    repeated = client.get(f"/v1/users/{user}/image-set", params=[("n", 6)] + [("classes", c) for c in allowed])
    assert repeated.json()["images"] == r.json()["images"]


def test_an_unknown_class_is_404_naming_the_known_classes(client, known_user):
    r = client.get(f"/v1/users/{known_user}/image-set", params={"classes": "no-such-class"})
    assert r.status_code == 404  # it names nothing, as an unknown item does
    assert "choose from" in r.json()["detail"]


@pytest.mark.parametrize("classes", ["", " ,"])
def test_an_empty_class_filter_is_422_as_the_schema_says(client, known_user, classes):
    r = client.get(f"/v1/users/{known_user}/image-set", params={"classes": classes})
    assert r.status_code == 422
    assert "classes" in r.json()["detail"]


def test_same_request_gives_the_same_images(client, trained_artifacts, known_user):
    user = known_user
    a = client.get(f"/v1/users/{user}/image-set?n=4").json()
    b = client.get(f"/v1/users/{user}/image-set?n=4").json()
    assert [i["image_id"] for i in a["images"]] == [i["image_id"] for i in b["images"]]
    png_a = client.get(f"/v1/images/{a['images'][0]['image_id']}.png").content
    assert png_a == client.get(f"/v1/images/{b['images'][0]['image_id']}.png").content


def test_generated_png_opens_and_regenerates_identically_without_the_cache(client, trained_artifacts):
    # a cold-start image is seeded, not optimised: its id alone regenerates it
    image_id = client.get("/v1/users/never-seen-7/image-set?n=1").json()["images"][0]["image_id"]
    r = client.get(f"/v1/images/{image_id}.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (64, 64)
    # a second app (a fresh process would be the same) has an empty cache and must render the same pixels;
    # it shares the key file in the artifacts root, so it accepts the first one's ids
    root, _ = trained_artifacts
    with TestClient(create_app(Settings(artifacts=root))) as fresh:
        assert fresh.get(f"/v1/images/{image_id}.png").content == r.content


def test_an_optimised_image_another_process_does_not_hold_has_expired(client, trained_artifacts, known_user):
    user = known_user
    image = client.get(f"/v1/users/{user}/image-set?n=1").json()["images"][0]
    assert image["explanation"]["optimised"]
    assert client.get(f"/v1/images/{image['image_id']}.png").status_code == 200
    # without a shared store (VITRINE_REDIS_URL) its latent code lives in the first app's process only
    root, _ = trained_artifacts
    with TestClient(create_app(Settings(artifacts=root))) as fresh:
        r = fresh.get(f"/v1/images/{image['image_id']}.png")
    assert r.status_code == 404 and r.json()["detail"].endswith("has expired; request a new image set")


def test_unknown_user_gets_the_cold_start_set(client):
    r = client.get("/v1/users/never-seen-before-42/image-set?n=5")
    assert r.status_code == 200
    body = r.json()
    assert body["strategy"] == "cold_start"
    assert len(body["images"]) == 5 and all(img["nearest_items"] for img in body["images"])


@pytest.mark.parametrize(
    "path,field",
    [
        ("/v1/users/U1/image-set?n=0", "n"),
        ("/v1/users/U1/image-set?n=1000", "n"),
        ("/v1/users/U1/image-set?n=abc", "n"),
        ("/v1/users/U1/image-set?neighbours=-1", "neighbours"),
        ("/v1/users/U1/image-set?session_id=%20bad%20", "session_id"),
        ("/v1/users/%20%3Cscript%3E/image-set", "user_id"),
    ],
)
def test_bad_parameters_are_422_naming_the_field(client, path, field):
    r = client.get(path)
    assert r.status_code == 422
    assert field in r.json()["detail"]


def test_unknown_or_malformed_image_ids_are_404(client, trained_artifacts):
    version = trained_artifacts[1]
    for bad in ("not-an-id", "20000101T000000Z-abcdef_0.0.0_0000000000000001", f"{version}_999.0.0_0000000000000001"):
        r = client.get(f"/v1/images/{bad}.png")
        assert r.status_code == 404 and "request a new image set" in r.json()["detail"]
    # an id of another bundle, signed with this service's key, is refused as from a bundle no longer serving
    conditions = client.app.state.service.personaliser.conditions.codes
    other = ImageIdCodec("20000101T000000Z-abcdef", conditions, load_or_create_key(trained_artifacts[0]))
    r = client.get(f"/v1/images/{other.encode(0, 1)}.png")
    assert r.status_code == 404 and "no longer serves" in r.json()["detail"]


def test_items_metadata_and_photo(client, trained_artifacts, known_user):
    user = known_user
    item_id = client.get(f"/v1/users/{user}/image-set?n=1").json()["images"][0]["nearest_items"][0]["item_id"]
    r = client.get(f"/v1/items/{item_id}")
    assert r.status_code == 200
    assert r.json()["item_id"] == item_id and r.json()["has_image"]
    photo = client.get(f"/v1/items/{item_id}/image.png")
    assert photo.status_code == 200 and Image.open(io.BytesIO(photo.content)).size == (64, 64)
    assert client.get("/v1/items/NOPE").status_code == 404


def test_without_a_bundle_the_api_answers_503_not_500(tmp_path):
    with TestClient(create_app(Settings(artifacts=tmp_path)), raise_server_exceptions=False) as c:
        assert c.get("/healthz").status_code == 503
        r = c.get("/v1/users/U1/image-set")
        assert r.status_code == 503 and "vitrine train" in r.json()["detail"]


def _bundle_catalogue(trained_artifacts):
    import pandas as pd

    root, version = trained_artifacts
    return pd.read_parquet(root / version / "catalogue" / "items.parquet")


def test_session_events_change_the_next_image_set_of_an_anonymous_session(client, trained_artifacts):
    cat = _bundle_catalogue(trained_artifacts)
    before = client.get("/v1/users/anon-7/image-set?n=4&session_id=sess-1").json()
    assert before["strategy"] == "cold_start"
    items = cat["item_id"].iloc[:5].tolist()
    r = client.post(
        "/v1/sessions/sess-1/events", json={"events": [{"item_id": i, "event_type": "view"} for i in items]}
    )
    assert r.status_code == 200 and r.json() == {"session_id": "sess-1", "accepted": 5, "session_events": 5}
    after = client.get("/v1/users/anon-7/image-set?n=4&session_id=sess-1").json()
    assert after["strategy"] == "session"
    assert [i["image_id"] for i in after["images"]] != [i["image_id"] for i in before["images"]]
    # the same session state gives the same set again
    again = client.get("/v1/users/anon-7/image-set?n=4&session_id=sess-1").json()
    assert [i["image_id"] for i in again["images"]] == [i["image_id"] for i in after["images"]]


@pytest.mark.parametrize(
    "body,status,needle",
    [
        ({"events": [{"item_id": "NOT-AN-ITEM", "event_type": "view"}]}, 404, "not in the catalogue"),
        ({"events": [{"item_id": "x", "event_type": "like"}]}, 422, "event_type"),
        ({"events": []}, 422, "events"),
        ({"events": [{"item_id": "x", "event_type": "view", "timestamp": "tuesday"}]}, 422, "timestamp"),
        ({"events": [{"item_id": "x", "event_type": "view", "timestamp": 0}]}, 422, "timestamp"),
        ({"events": [{"item_id": "x", "event_type": "view", "timestamp": "2001-01-01T00:00:00Z"}]}, 422, "window"),
        ({}, 422, "events"),
    ],
)
def test_bad_session_events_are_4xx_and_store_nothing(client, body, status, needle):
    r = client.post("/v1/sessions/sess-bad/events", json=body)
    assert r.status_code == status
    assert needle in r.json()["detail"]
    assert client.get("/v1/users/anon-9/image-set?n=2&session_id=sess-bad").json()["strategy"] == "cold_start"
