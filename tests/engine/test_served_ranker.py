"""What the storefront is served is what `vitrine evaluate recommenders` measures: the bundle's ranker."""

import numpy as np
import pytest

from engine.artifacts.bundle import load_bundle
from engine.evaluation.recommenders import ServedRanker
from engine.recommend.baselines import build_interactions
from engine.serving.personaliser import Personaliser
from engine.serving.sessions import SessionEvent
from engine.training.config import TrainConfig, build_config
from features.readers import read_store


@pytest.fixture(scope="module")
def served(trained_artifacts):
    root, version = trained_artifacts
    bundle = load_bundle(root / version)
    return bundle, Personaliser(bundle)


def test_the_bundle_carries_a_ranker_and_serving_ranks_with_it(served):
    bundle, personaliser = served
    assert (bundle.path / "ranker" / "ranker.json").is_file()
    assert personaliser.ranker is not None
    user = str(bundle.embeddings.user_ids[0])
    ranking = personaliser.rank(user)
    assert ranking is not None and len(ranking.item_ids) >= 12
    assert np.all(np.diff(ranking.scores) <= 1e-9)  # best first
    # the shopper's conditions are those of the ranker's top items: the top item's condition is drawn with
    # the largest weight of any single item
    rows = np.array([personaliser.catalogue.rows.get(i, -1) for i in ranking.item_ids[:32]])
    p, support = personaliser.conditions.of_items(rows)
    assert support.sum() == (rows >= 0).sum() and p.sum() == pytest.approx(1.0)
    first = personaliser.conditions.of_catalogue_row[rows[rows >= 0][0]]
    assert p[first] > 0


def test_served_top_k_equals_the_evaluated_top_k_for_the_same_shoppers(served, demo_store, trained_artifacts):
    from features.pseudonyms import load_or_create_keyring

    bundle, personaliser = served
    config = build_config(TrainConfig, bundle.manifest["config"], source="bundle")
    store = read_store(demo_store, pseudonyms=load_or_create_keyring(trained_artifacts[0]))  # as training reads it
    # the evaluation's path: fit on the same events as the bundle, write, load with serving's loader, ask by id
    evaluated = ServedRanker(config.ranker, catalogue=store.catalogue, weighting=config.weighting, seed=config.seed)
    data = build_interactions(store.events, config.weighting)
    evaluated.fit(data)
    users = [str(u) for u in data.users.ids_[:40]] + ["a-shopper-never-seen"]
    rows = data.users.transform(np.asarray(users, dtype=object))
    top = evaluated.recommend(rows, 12)
    for user, items in zip(users, top, strict=True):
        assert personaliser.recommended_items(user, 12) == [str(i) for i in data.items.ids_[items]], user


def test_a_session_reranks_through_the_same_ranker_for_new_and_known_shoppers(served):
    bundle, personaliser = served
    from datetime import UTC, datetime

    item = next(str(i) for i in personaliser.ranker.item_ids if str(i) in personaliser.catalogue.rows)
    now = datetime.now(UTC)
    session = [
        SessionEvent(item_id=item, event_type="purchase", timestamp=now),
        SessionEvent(item_id=item, event_type="add_to_cart", timestamp=now),
    ]
    new = personaliser.rank("a-new-shopper", session)
    assert new is not None and item in set(new.item_ids[:20])
    known = str(bundle.embeddings.user_ids[3])
    before, after = personaliser.rank(known), personaliser.rank(known, session)
    assert item in set(after.item_ids) and list(after.item_ids) != list(before.item_ids)
    s = personaliser.image_set("a-new-shopper", 4, session=session)
    assert s.strategy == "session"
    assert personaliser.rank("a-new-shopper") is None  # no history and no session: nothing to rank


def test_the_recommendations_endpoint_serves_the_evaluated_ranking(trained_artifacts, served, shopper_ids):
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.settings import Settings
    from features.pseudonyms import load_or_create_keyring

    root, version = trained_artifacts
    _, personaliser = served
    user = shopper_ids[5]  # the shop's id; the bundle knows its pseudonym
    pseudonym = load_or_create_keyring(root)(user)
    with TestClient(create_app(Settings(artifacts=root))) as client:
        got = client.get(f"/v1/users/{user}/recommendations", params={"k": 12})
        assert got.status_code == 200, got.text
        body = got.json()
        assert body["ranked_by"] == "ranker" and body["bundle_version"] == version
        assert [it["item_id"] for it in body["items"]] == personaliser.recommended_items(pseudonym, 12)
        assert client.get(f"/v1/users/{user}/recommendations", params={"k": 0}).status_code == 422
        new = client.get("/v1/users/someone-new/recommendations", params={"k": 3}).json()
        assert [it["item_id"] for it in new["items"]] == [str(i) for i in personaliser.ranker.popular[:3]]
