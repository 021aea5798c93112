"""The merchant's routes: /v1/generate (images of a product, in the catalogue or not) and /v1/tag (a photo's
attributes), behind a service key; bad input is a 4xx that says what to fix."""

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from api.settings import Settings
from engine.artifacts.bundle import load_bundle
from engine.serving.tagging import Tagger, decode_image

SERVICE_KEY = "merchant-service-key-0123456789"


@pytest.fixture(scope="module")
def client(sparse_artifacts):
    """An open server on a bundle whose catalogue lacks one combination (``sparse_artifacts``)."""
    with TestClient(create_app(Settings(artifacts=sparse_artifacts[0])), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def bundle(sparse_artifacts):
    root, version, _ = sparse_artifacts
    return load_bundle(root / version)


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def test_a_combination_the_catalogue_lacks_gives_images_that_render_and_lead_to_real_items(client, sparse_artifacts):
    missing = sparse_artifacts[2]
    r = client.get("/v1/generate", params={**missing, "n": 3, "neighbours": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["condition"] == missing and body["in_catalogue"] is False and body["catalogue_items"] == 0
    assert body["bundle_version"] == sparse_artifacts[1] and body["seed"] == 0
    assert len(body["images"]) == 3
    for img in body["images"]:
        assert set(img["judged"]) == set(missing)
        assert len(img["nearest_items"]) == 2
        assert all(it["attributes"]["class"] == missing["class"] for it in img["nearest_items"])
        shown = client.get(img["url"].removeprefix("http://testserver"))
        assert shown.status_code == 200 and shown.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(shown.content)).size == (64, 64)
    again = client.get("/v1/generate", params={**missing, "n": 3, "neighbours": 2})
    assert again.json()["images"] == body["images"]  # deterministic per request
    reseeded = client.get("/v1/generate", params={**missing, "n": 3, "neighbours": 2, "seed": 1}).json()
    assert not {i["image_id"] for i in reseeded["images"]} & {i["image_id"] for i in body["images"]}


def test_a_combination_in_the_catalogue_says_so(client, bundle):
    have = bundle.encoder.decode(bundle.codes[5])
    body = client.get("/v1/generate", params={**have, "n": 1}).json()
    assert body["in_catalogue"] is True and body["catalogue_items"] >= 1


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"colour": "ultraviolet"}, "unknown colour 'ultraviolet'; known values:"),
        ({"pattern": None}, "pattern is missing; known values:"),
        ({"sleeve": "long"}, "'sleeve' is not an attribute"),
    ],
)
def test_unknown_or_missing_attributes_are_422_listing_the_known_values(client, bundle, change, says):
    params = {**bundle.encoder.decode(bundle.codes[0]), **change}
    r = client.get("/v1/generate", params={k: v for k, v in params.items() if v is not None})
    assert r.status_code == 422
    body = r.json()
    assert says in body["detail"] and body["errors"]
    if "known values" in says:
        attr = next(iter(change))
        assert all(v in body["detail"] for v in bundle.encoder.values_[attr])


def test_n_and_the_same_attribute_twice_are_422(client, bundle):
    params = bundle.encoder.decode(bundle.codes[0])
    assert client.get("/v1/generate", params={**params, "n": 10_000}).status_code == 422
    assert client.get("/v1/generate", params={**params, "n": 0}).status_code == 422
    twice = client.get("/v1/generate", params=[*params.items(), ("colour", params["colour"])])
    assert twice.status_code == 422 and "give one value" in twice.json()["detail"]


def test_a_catalogue_photo_is_tagged_with_its_attributes_as_the_evaluation_measures_it(client, bundle):
    row = int(np.flatnonzero(bundle.catalogue["has_image"].to_numpy())[0])
    data = (bundle.image_root / bundle.catalogue["image"].iat[row]).read_bytes()
    truth = bundle.encoder.decode(bundle.codes[row])
    everything = max(bundle.encoder.cardinalities)
    r = client.post("/v1/tag", params={"top_k": everything}, content=data, headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["bundle_version"] == bundle.version
    expected = Tagger.from_bundle(bundle).probabilities(decode_image(data, 64)[None])
    for a, attr in enumerate(bundle.encoder.attributes):
        guesses = body["attributes"][attr]
        assert truth[attr] in [g["value"] for g in guesses]
        assert sum(g["probability"] for g in guesses) == pytest.approx(1.0, abs=1e-4)
        probs = [g["probability"] for g in guesses]
        assert probs == sorted(probs, reverse=True)
        values = bundle.encoder.values_[attr]
        for g in guesses:  # what POST /v1/tag answers is what `vitrine evaluate tagging` measures
            assert g["probability"] == pytest.approx(float(expected[a][0, values.index(g["value"])]), abs=1e-6)
    top = client.post("/v1/tag", files={"image": ("item.png", data, "image/png")}).json()["attributes"]
    assert all(len(top[attr]) == 3 for attr in bundle.encoder.attributes)  # multipart, top_k 3 by default
    assert top["class"][0] == body["attributes"]["class"][0]


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b"\x89PNG\r\n\x1a\n garbage that is not an image", "image/png", 422),
        (b"", "image/png", 400),
        (b"hello", "text/plain", 415),
    ],
)
def test_garbage_empty_and_non_image_bodies_are_4xx(client, content, content_type, status):
    r = client.post("/v1/tag", content=content, headers={"Content-Type": content_type})
    assert r.status_code == status
    assert r.json()["detail"]


def test_a_form_without_the_image_field_and_an_oversized_body_are_4xx(client):
    r = client.post("/v1/tag", files={"photo": ("a.png", png(np.zeros((8, 8, 3), np.uint8)), "image/png")})
    assert r.status_code == 422 and "'image'" in r.json()["detail"]
    big = b"\x89PNG" + b"\0" * (2 * 1_048_576)
    assert client.post("/v1/tag", content=big, headers={"Content-Type": "image/png"}).status_code == 413


def test_the_merchant_routes_need_a_service_key_when_access_is_not_open(sparse_artifacts, bundle, tmp_path):
    settings = Settings(
        artifacts=sparse_artifacts[0],
        open_access=False,
        service_keys=SERVICE_KEY,
        database_url=f"sqlite:///{tmp_path}/events.db",
    )
    photo = png(np.full((64, 64, 3), 255, np.uint8))
    params = bundle.encoder.decode(bundle.codes[0])
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        assert c.get("/v1/generate", params=params).status_code == 401
        assert c.post("/v1/tag", content=photo, headers={"Content-Type": "image/png"}).status_code == 401
        wrong = {"Authorization": "Bearer not-a-key-of-this-server"}
        assert c.get("/v1/generate", params=params, headers=wrong).status_code == 401
        token = c.post("/v1/tokens", json={"user_id": "shopper-1"}, headers={"Authorization": f"Bearer {SERVICE_KEY}"})
        as_shopper = {"Authorization": f"Bearer {token.json()['token']}"}
        assert c.get("/v1/generate", params=params, headers=as_shopper).status_code == 403
        key = {"Authorization": f"Bearer {SERVICE_KEY}"}
        assert c.get("/v1/generate", params=params, headers=key).status_code == 200
        tagged = c.post("/v1/tag", content=photo, headers={**key, "Content-Type": "image/png"})
        assert tagged.status_code == 200
