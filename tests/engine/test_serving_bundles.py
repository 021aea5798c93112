"""Two hosts on one artifacts folder (two services here): an image id renders the same bytes on either."""

from __future__ import annotations

import shutil

import pytest

from engine.artifacts.registry import ArtifactRegistry, link_or_copy
from engine.serving.latents import MemoryLatentStore
from engine.serving.service import Service, SharedState

OLD, NEW, OTHER = "20240101T000000Z-aaaaaa", "20240102T000000Z-bbbbbb", "20240103T000000Z-cccccc"
KEY = b"k" * 32


@pytest.fixture
def root(trained_artifacts, tmp_path):
    """A registry of three copies of the trained bundle, serving OLD."""
    source, version = trained_artifacts
    for name in (OLD, NEW, OTHER):
        shutil.copytree(source / version, tmp_path / name, copy_function=link_or_copy)
    shutil.copy(source / ".pseudonym-keys.json", tmp_path)
    ArtifactRegistry(tmp_path).set_current(OLD)
    return tmp_path


def host(root, latents, **kw) -> Service:
    service = Service(root, shared=SharedState(image_key=KEY, latents=latents), watch_seconds=None, **kw)
    assert service.load_current() == OLD
    return service


def test_every_image_renders_the_same_bytes_on_a_host_that_did_not_make_its_set(root):
    """The host that made a set caches its PNGs; another regenerates them from the ids alone (and the shared latent
    codes). Rendered in one batch, about one image in twelve differed by one level in one pixel."""
    latents = MemoryLatentStore()
    a, b = host(root, latents), host(root, latents)
    known = [str(u) for u in a.personaliser.bundle.embeddings.user_ids[:3]]
    for user in [*known, "shopper-new", "shopper-other"]:
        images = a.image_set(user, 8, neighbours=2).images.images
        assert [b.render_png(img.image_id) for img in images] == [a.render_png(img.image_id) for img in images]
    assert any(img.image_id.count(".") == 4 for img in a.image_set(known[0], 8, neighbours=2).images.images)
