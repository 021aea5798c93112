"""Two hosts on one artifacts folder (two services here): an image id renders the same bytes on either; and across
a promotion, which hosts follow seconds apart, each renders the ids that the other's bundle issued
(engine/serving/bundles.py)."""

from __future__ import annotations

import shutil
import time

import pytest

from engine.artifacts.registry import ArtifactRegistry, BundleRefused, link_or_copy
from engine.serving.config import PersonaliserConfig
from engine.serving.image_ids import bundle_tag, issuing_bundle
from engine.serving.latents import MemoryLatentStore
from engine.serving.limits import Overloaded
from engine.serving.personaliser import Personaliser
from engine.serving.service import Service, SharedState
from engine.serving.types import UnknownImage

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


def image_ids(service: Service, user: str = "shopper-new") -> list[str]:
    return [img.image_id for img in service.image_set(user, 2, neighbours=2).images.images]


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


def test_an_id_names_the_bundle_that_issued_it():
    assert issuing_bundle("not an id") is None
    assert bundle_tag(OLD) != bundle_tag(NEW) and len(bundle_tag(OLD)) == 8


def test_after_a_swap_the_replaced_bundle_still_renders_its_ids(root):
    service = host(root, MemoryLatentStore())
    old_ids = image_ids(service)
    old_pngs = [service.render_png(i) for i in old_ids]
    ArtifactRegistry(root).set_current(NEW)
    assert service.reload() == NEW
    assert [issuing_bundle(i) for i in image_ids(service)] == [bundle_tag(NEW)] * 2
    assert [service.render_png(i) for i in old_ids] == old_pngs  # a page shown just before the promotion


def test_the_replaced_bundle_is_let_go_after_its_time(root):
    service = host(root, MemoryLatentStore(), keep_previous_seconds=0.2)
    old_ids = image_ids(service)
    ArtifactRegistry(root).set_current(NEW)
    service.reload()
    assert service.render_png(old_ids[0])
    time.sleep(0.3)
    assert [p.version for p in service.bundles.loaded()] == [NEW]
    with pytest.raises(UnknownImage, match="made by another bundle"):
        service.render_png(old_ids[0])


def test_an_id_of_the_bundle_the_pointer_names_loads_it_at_once(root):
    latents = MemoryLatentStore()  # what Redis is to two hosts
    a, b = host(root, latents), host(root, latents)
    ArtifactRegistry(root).set_current(NEW)
    assert a.reload() == NEW and b.version == OLD  # A noticed the promotion first
    new_ids = image_ids(a)
    assert [b.render_png(i) for i in new_ids] == [a.render_png(i) for i in new_ids]  # B loaded NEW to answer
    assert b.version == NEW


def test_an_id_of_a_bundle_the_pointer_does_not_name_loads_nothing(root):
    latents = MemoryLatentStore()
    a, b = host(root, latents), host(root, latents)
    ArtifactRegistry(root).set_current(OTHER)
    a.reload()
    other_ids = image_ids(a)
    ArtifactRegistry(root).set_current(OLD)  # rolled back before B looked
    with pytest.raises(UnknownImage, match="made by another bundle"):
        b.render_png(other_ids[0])
    assert b.version == OLD


def test_a_warmed_up_bundle_serves_with_empty_caches_and_the_shared_store_untouched(root):
    """With ``warm_up`` (the API server's setting) a bundle makes a known and a new shopper's set before it serves,
    then forgets them. Their latent codes never reach the shared store: deleting them there could break another
    host's set that names the same codes, and keeping them would leave codes no request made."""
    latents = MemoryLatentStore()
    service = host(root, latents, warm_up=True)
    p = service.personaliser
    known = str(p.bundle.embeddings.user_ids[0])
    assert len(p._sets) == 0 and len(p._pngs) == 0 and len(latents) == 0
    assert p.latents is latents  # the shared store is back in place
    made = p.image_set(known, 4, neighbours=2)
    assert not made.cached and len(latents) > 0  # made again, its codes now in the shared store


def test_a_bundle_that_cannot_make_a_set_is_refused_and_the_old_one_serves(root, monkeypatch):
    service = host(root, MemoryLatentStore(), warm_up=True)

    def broken(self, *args, **kwargs):
        raise RuntimeError("the generator's weights do not fit its config")

    monkeypatch.setattr(Personaliser, "image_set", broken)
    with pytest.raises(BundleRefused, match="warm-up set"):
        service.reload(NEW)
    monkeypatch.undo()
    assert service.personaliser.version == OLD
    assert service.image_set("shopper-new", 2, neighbours=2).images.images


def test_a_promotion_under_overload_is_warmed_up_outside_the_gate(root):
    """Every place of the admission gate is held by the serving bundle's generations: the new bundle's warm-up
    sets do not queue for one, so the promotion is not refused, and the gate is the service's again after."""
    config = PersonaliserConfig(max_concurrent_generations=1, max_queued_generations=0)
    service = host(root, MemoryLatentStore(), warm_up=True, config=config)
    with service.gate.admit():  # the one place, held
        with pytest.raises(Overloaded):
            service.image_set("shopper-new", 2, neighbours=2)
        assert service.reload(NEW) == NEW
    assert service.personaliser.gate is service.gate
    assert service.image_set("shopper-new", 2, neighbours=2).images.images
