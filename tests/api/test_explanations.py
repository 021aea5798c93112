"""Each generated image says why it was made: condition, preference score, the catalogue items behind it."""

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings


@pytest.fixture(scope="module")
def client(trained_artifacts):
    root, _ = trained_artifacts
    with TestClient(create_app(Settings(artifacts=root)), raise_server_exceptions=False) as c:
        yield c


def test_a_known_shoppers_images_carry_their_explanation(client, shopper_ids):
    user = shopper_ids[1]
    body = client.get(f"/v1/users/{user}/image-set", params={"n": 4, "neighbours": 2}).json()
    assert body["strategy"] == "personalised"
    assert body["min_pairwise_distance"] is not None
    for img in body["images"]:
        why = img["explanation"]
        assert why["optimised"] is True
        assert why["preference_score"] is not None and why["preference_score_unoptimised"] is not None
        assert why["condition_probability"] == pytest.approx(img["score"])
        assert why["item_ids"] == [it["item_id"] for it in img["nearest_items"]]
        assert img["condition"]["class"] in why["reason"] and why["item_ids"][0] in why["reason"]
        assert all(it["shopper_score"] is not None for it in img["nearest_items"])


def test_a_new_shoppers_images_are_explained_by_popularity(client):
    body = client.get("/v1/users/brand-new-shopper/image-set?n=3").json()
    assert body["strategy"] == "cold_start"
    for img in body["images"]:
        assert img["explanation"]["optimised"] is False and "popular" in img["explanation"]["reason"]
