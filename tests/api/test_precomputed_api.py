"""The API reads precomputed sets first: with the job's entries in the artifacts' SQLite file, a known shopper's
image set is the stored one, and it answers exactly what fresh generation answers."""

from __future__ import annotations

import shutil

from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from engine.artifacts.bundle import load_bundle
from engine.batch.image_sets import job_config, render_sets
from engine.serving.image_ids import load_or_create_key
from engine.serving.personaliser import Personaliser
from engine.serving.precomputed import SetParams
from engine.serving.precomputed_store import SqlitePrecomputedStore
from features.pseudonyms import load_or_create_keyring


def test_an_image_set_is_read_from_the_precomputed_sets_first(trained_artifacts, shopper_ids, tmp_path):
    root = tmp_path / "artifacts"
    shutil.copytree(trained_artifacts[0], root)
    version = trained_artifacts[1]
    params = SetParams(n=3, neighbours=2)
    user = shopper_ids[5]
    pseudonym = load_or_create_keyring(root)(user)
    job = Personaliser(load_bundle(root / version), job_config(params), key=load_or_create_key(root))
    store = SqlitePrecomputedStore.under(root)  # where the API looks without VITRINE_REDIS_URL
    store.put_many(version, [(s, params.key(job_config(params)), e) for s, e in render_sets(job, [pseudonym], params)])

    settings = Settings(artifacts=root, database_url=f"sqlite:///{tmp_path}/events.db")
    with TestClient(create_app(settings)) as client:
        query = {"n": 3, "neighbours": 2}
        stored = client.get(f"/v1/users/{user}/image-set", params=query)
        assert stored.status_code == 200, stored.text
        service = client.app.state.service
        assert service.metrics.registry.get_sample_value("vitrine_precomputed_set_hits_total") == 1
        assert store.delete_shoppers([pseudonym]) == 1
        fresh = client.get(f"/v1/users/{user}/image-set", params=query)
        assert service.metrics.registry.get_sample_value("vitrine_precomputed_set_misses_total") == 1
        assert stored.json() == fresh.json() and stored.json()["strategy"] == "personalised"
        image = stored.json()["images"][0]["url"].split("/v1/")[1]
        assert client.get(f"/v1/{image}").status_code == 200
