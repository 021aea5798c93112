"""Retrain, promote and reload without dropping or failing a request."""

import shutil
import threading
import time

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from engine.artifacts.promotion import promote_bundle
from engine.artifacts.registry import ArtifactRegistry
from engine.training.pipeline import retrain_embeddings

TOKEN = "s3cret"


@pytest.fixture()
def two_bundles(trained_artifacts, demo_store, tmp_path):
    root, version = trained_artifacts
    local = tmp_path / "artifacts"
    shutil.copytree(root / version, local / version)
    registry = ArtifactRegistry(local)
    registry.set_current(version)
    new, comparison = retrain_embeddings(demo_store, local, show_progress=False)
    assert comparison["serving"]["version"] == version and comparison["new"]["version"] == new
    return local, version, new


def _client(root, **kw):
    return TestClient(create_app(Settings(artifacts=root, admin_token=TOKEN, **kw)), raise_server_exceptions=False)


def test_retrained_bundle_shares_the_parents_generator_and_records_its_parent(two_bundles):
    root, old, new = two_bundles
    from models.io import read_json

    manifest = read_json(root / new / "manifest.json")
    assert manifest["parents"] == [old] and manifest["retrained"] == ["embeddings", "ranker"]
    name = "generator/generator_ema.safetensors"
    assert (root / old / name).read_bytes() == (root / new / name).read_bytes()


def test_reload_under_concurrent_requests_drops_nothing(two_bundles):
    root, old, new = two_bundles
    # four clients as fast as they can go: the rate limit is off, or a fast machine would see 429s
    with _client(root, database_url=f"sqlite:///{root}/events.db", rate_limit_per_second=0) as client:
        assert client.get("/healthz").json()["bundle_version"] == old
        statuses, versions, stop = [], [], threading.Event()

        def hammer(k: int) -> None:
            while not stop.is_set():
                r = client.get(f"/v1/users/U{k:05d}/image-set?n=2")
                statuses.append(r.status_code)
                if r.status_code == 200:
                    versions.append(r.json()["bundle_version"])

        threads = [threading.Thread(target=hammer, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        promote_bundle(ArtifactRegistry(root), new, force=True)
        r = client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and r.json() == {"previous": old, "serving": new}
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join()
    assert statuses and set(statuses) == {200}
    assert old in versions and new in versions
    assert versions[-1] == new


def test_reload_needs_the_token(two_bundles):
    root, _, _ = two_bundles
    with _client(root) as client:
        assert client.post("/v1/admin/reload").status_code == 401
        assert client.post("/v1/admin/reload", headers={"Authorization": "Bearer nope"}).status_code == 403


def test_a_broken_promoted_bundle_is_refused_and_the_old_one_keeps_serving(two_bundles):
    root, old, new = two_bundles
    with _client(root) as client:
        (root / new / "index" / "items.faiss").write_bytes(b"garbage")
        ArtifactRegistry(root).set_current(new)  # bypass promote's checks, as a bad deploy would
        r = client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 409 and "still serving" in r.json()["detail"]
        assert client.get("/v1/users/U00001/image-set?n=1").json()["bundle_version"] == old


def test_a_bundle_garbled_after_it_was_written_is_refused_and_the_old_one_keeps_serving(two_bundles):
    """Bytes of the new bundle's generator weights zeroed in place (same size, still a valid file): only the
    checksum the manifest recorded tells; the reload is refused, and a worker following the pointer refuses it
    too, both still serving the old bundle."""
    root, old, new = two_bundles
    weights = root / new / "generator" / "generator_ema.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    weights.unlink()  # a hard link to the old bundle's file: replace it, never write through it
    weights.write_bytes(bytes(data))
    with _client(root) as client:
        ArtifactRegistry(root).set_current(new)
        r = client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 409
        assert "differ from the checksums" in r.json()["detail"] and f"still serving {old}" in r.json()["detail"]
        client.app.state.service.watch_seconds = 0.0
        for _ in range(3):
            r = client.get("/v1/users/U00001/image-set?n=1")
            assert r.status_code == 200 and r.json()["bundle_version"] == old
            time.sleep(0.5)
        assert client.get("/healthz").json()["bundle_version"] == old


def test_workers_follow_the_pointer_on_their_own(two_bundles):
    root, old, new = two_bundles
    with _client(root) as client:
        client.app.state.service.watch_seconds = 0.0
        ArtifactRegistry(root).set_current(new)
        deadline = time.time() + 30
        while time.time() < deadline:
            if client.get("/v1/users/U00001/image-set?n=1").json()["bundle_version"] == new:
                break
            time.sleep(0.2)
        assert client.get("/healthz").json()["bundle_version"] == new != old
