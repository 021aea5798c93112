"""Served sizes (``GET /v1/images/{id}.png?size=``) and photo restoration (``POST /v1/enhance``)."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from api.settings import Settings
from engine.artifacts.bundle import load_bundle
from engine.artifacts.registry import CHECKSUMS, ArtifactRegistry, bundle_checksums
from engine.serving.enhance import Enhancer
from models.io import read_json, write_json

SERVICE = "service-key-for-sr-tests-0123456789"


def _png(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))


def _photo_bytes(w: int, h: int, fmt: str = "JPEG") -> bytes:
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.clip(128 + 60 * np.sin(xx / 4.0)[..., None] * np.cos(yy / 6.0)[..., None] + np.zeros(3), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(image.astype(np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def client(trained_artifacts):
    root, _ = trained_artifacts
    with TestClient(create_app(Settings(artifacts=root)), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def image_id(client, shopper_ids):
    r = client.get(f"/v1/users/{shopper_ids[0]}/image-set", params={"n": 1})
    assert r.status_code == 200, r.text
    return r.json()["images"][0]["image_id"]


def test_sizes_64_128_256_are_served_and_others_refused(client, image_id):
    assert _png(client.get(f"/v1/images/{image_id}.png")).shape == (64, 64, 3)
    for size in (64, 128, 256):
        assert _png(client.get(f"/v1/images/{image_id}.png", params={"size": size})).shape == (size, size, 3)
    for size in (32, 100, 512):
        r = client.get(f"/v1/images/{image_id}.png", params={"size": size})
        assert r.status_code == 422 and "64, 128, 256" in r.json()["detail"]
    assert client.get(f"/v1/images/{image_id}.png", params={"size": "big"}).status_code == 422


def test_served_256_px_is_what_the_evaluation_measures(client, image_id, trained_artifacts):
    root, version = trained_artifacts
    native = _png(client.get(f"/v1/images/{image_id}.png", params={"size": 64}))
    served = _png(client.get(f"/v1/images/{image_id}.png", params={"size": 256}))
    evaluated = Enhancer.of_bundle(load_bundle(root / version)).upscale(native[None], 4)[0]
    assert np.array_equal(served, evaluated)
    bicubic = np.asarray(Image.fromarray(native).resize((256, 256), Image.Resampling.BICUBIC))
    assert not np.array_equal(served, bicubic)  # the net, not a stand-in


@pytest.fixture(scope="module")
def without_sr(trained_artifacts, tmp_path_factory):
    """The trained bundle copied into a registry of its own without its sr/ component."""
    root, version = trained_artifacts
    registry = ArtifactRegistry(tmp_path_factory.mktemp("no-sr"))
    copy = registry.new_version("no-sr")
    shutil.copytree(root / version, registry.root / copy, ignore=shutil.ignore_patterns("sr"))
    manifest = read_json(registry.root / copy / "manifest.json")
    write_json(registry.root / copy / "manifest.json", {**manifest, CHECKSUMS: bundle_checksums(registry.root / copy)})
    registry.set_current(copy)
    return registry.root


def test_a_bundle_without_sr_serves_64_px_and_names_the_missing_component(without_sr, shopper_ids):
    with TestClient(create_app(Settings(artifacts=without_sr)), raise_server_exceptions=False) as c:
        image = c.get(f"/v1/users/{shopper_ids[0]}/image-set", params={"n": 1}).json()["images"][0]["image_id"]
        assert _png(c.get(f"/v1/images/{image}.png", params={"size": 64})).shape == (64, 64, 3)
        r = c.get(f"/v1/images/{image}.png", params={"size": 256})
        assert r.status_code == 422 and "sr/" in r.json()["detail"]
        r = c.post("/v1/enhance", content=_photo_bytes(20, 20), headers={"Content-Type": "image/jpeg"})
        assert r.status_code == 422 and "sr/" in r.json()["detail"]


def test_enhance_returns_a_png_of_the_same_size(client):
    for w, h, fmt in ((37, 23, "JPEG"), (64, 48, "PNG"), (30, 30, "WEBP")):
        out = _png(client.post("/v1/enhance", content=_photo_bytes(w, h, fmt), headers={"Content-Type": "image/png"}))
        assert out.shape == (h, w, 3)


def test_enhance_rejects_what_is_not_an_image_with_a_4xx(client):
    for body in (b"", b"hello", b"\x89PNG\r\n\x1a\n broken", _photo_bytes(5, 5, "PNG")):
        r = client.post("/v1/enhance", content=body, headers={"Content-Type": "image/png"})
        assert r.status_code == 422, (body[:10], r.status_code, r.text)
        assert r.json()["detail"]


def test_enhance_needs_a_service_key_when_access_is_not_open(trained_artifacts, tmp_path):
    settings = Settings(
        artifacts=trained_artifacts[0],
        service_keys=SERVICE,
        open_access=False,
        database_url=f"sqlite:///{tmp_path}/events.db",
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        body = _photo_bytes(16, 16)
        assert c.post("/v1/enhance", content=body).status_code == 401
        assert c.post("/v1/enhance", content=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = c.post("/v1/enhance", content=body, headers={"Authorization": f"Bearer {SERVICE}"})
        assert _png(ok).shape == (16, 16, 3)
