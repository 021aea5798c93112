"""Preference maximisation, set construction, grounding filters and the set cache, on the tiny bundle."""

import json
import shutil
from datetime import UTC, datetime

import numpy as np
import pytest
import torch

from engine.artifacts.bundle import load_bundle
from engine.artifacts.registry import CHECKSUMS
from engine.serving.config import PersonaliserConfig
from engine.serving.latents import MemoryLatentStore
from engine.serving.personaliser import Personaliser
from engine.serving.preference import select_diverse
from engine.serving.sessions import SessionEvent
from engine.serving.types import UnknownImage


@pytest.fixture(scope="module")
def personaliser(trained_artifacts):
    root, version = trained_artifacts
    return Personaliser(load_bundle(root / version))


def test_the_tiny_bundle_has_a_visual_encoder_and_optimises(personaliser):
    assert personaliser.preference.visual is not None and personaliser.preference.available


def test_optimising_the_latent_code_raises_the_shoppers_preference_score(personaliser):
    # the tiny generator is barely trained, so the score is nearly flat in z: no prior, small steps, many
    personaliser = Personaliser(personaliser.bundle, PersonaliserConfig(lr=0.02, prior_weight=0.0))
    bundle = personaliser.bundle
    users = bundle.embeddings.user_ids[:4]
    u = bundle.embeddings.user_factors[:4].repeat(2, axis=0)
    codes = personaliser.conditions.codes[np.arange(8) % len(personaliser.conditions.codes)]
    z0 = personaliser.generator.latents(list(range(8)))
    z = personaliser.preference.optimise(u, codes, z0, steps=20, realism_weight=0.0)
    with torch.inference_mode():
        f0 = bundle.classifier.embed(personaliser.generator.generate(codes, [], z0))
        f1 = bundle.classifier.embed(personaliser.generator.generate(codes, [], z))
    before = personaliser.preference.scores(u, f0, codes)
    after = personaliser.preference.scores(u, f1, codes)
    assert after.mean() > before.mean()
    assert len(users) == 4


def test_optimised_images_regenerate_identically_from_their_id_and_the_shared_latent_store(trained_artifacts):
    root, version = trained_artifacts
    key, latents = b"test-image-key-0123456789", MemoryLatentStore()
    personaliser = Personaliser(load_bundle(root / version), key=key, latents=latents)
    user = personaliser.bundle.embeddings.user_ids[3]
    result = personaliser.image_set(user, 3)
    assert all(img.explanation.optimised for img in result.images)
    assert len(latents) == 3  # one optimised latent code per image, kept server-side
    # another worker: an empty image cache, the same key and store: it must regenerate the same pixels
    fresh = Personaliser(load_bundle(root / version), key=key, latents=latents)
    for img in result.images:
        assert fresh.ids.decode(img.image_id).latent is not None
        assert fresh.render_png(img.image_id) == personaliser.render_png(img.image_id)
    # a worker without the codes (no shared store) says the image expired, and what to do
    alone = Personaliser(load_bundle(root / version), key=key)
    with pytest.raises(UnknownImage, match="expired; request a new image set"):
        alone.render_png(result.images[0].image_id)


def test_a_set_served_from_the_cache_writes_its_latent_codes_again(trained_artifacts):
    root, version = trained_artifacts
    latents = MemoryLatentStore(max_entries=4)
    personaliser = Personaliser(load_bundle(root / version), latents=latents)
    users = personaliser.bundle.embeddings.user_ids
    first = personaliser.image_set(users[8], 4)
    personaliser.image_set(users[9], 4)  # evicts the first set's codes from a store of 4
    assert all(latents.get(personaliser.ids.decode(i.image_id).latent or "") is None for i in first.images)
    again = personaliser.image_set(users[8], 4)
    assert again.cached
    assert all(latents.get(personaliser.ids.decode(i.image_id).latent or "") for i in again.images)


def test_mmr_keeps_the_minimum_distance_while_the_pool_allows_it():
    rel = np.array([1.0, 0.99, 0.5, 0.2])
    feats = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    chosen, dmin = select_diverse(rel, feats, 2, mmr_lambda=0.9, min_distance=0.5)
    assert list(chosen) == [0, 2]  # the duplicate of the best one is skipped despite its relevance
    assert dmin == pytest.approx(1.0)
    chosen, dmin = select_diverse(rel, feats, 4, mmr_lambda=0.9, min_distance=0.5)
    assert sorted(chosen) == [0, 1, 2, 3] and dmin == pytest.approx(0.0)  # relaxed only when it must be


def test_the_set_cache_answers_repeats_and_misses_when_the_session_changes(personaliser):
    user = personaliser.bundle.embeddings.user_ids[5]
    first = personaliser.image_set(user, 4)
    again = personaliser.image_set(user, 4)
    assert not first.cached and again.cached
    assert [i.image_id for i in again.images] == [i.image_id for i in first.images]
    item = str(personaliser.bundle.catalogue["item_id"].iat[0])
    event = SessionEvent(item_id=item, event_type="view", timestamp=datetime(2026, 1, 1, tzinfo=UTC))
    assert not personaliser.image_set(user, 4, session=[event]).cached


def test_the_class_filter_holds_for_generated_and_grounded_items(personaliser):
    user = personaliser.bundle.embeddings.user_ids[6]
    allowed = personaliser.bundle.encoder.values_["class"][:2]
    result = personaliser.image_set(user, 4, neighbours=3, classes=allowed)
    for img in result.images:
        assert img.condition["class"] in allowed
        assert img.nearest and all(it.attributes["class"] in allowed for it in img.nearest)
        assert all(it.shopper_score is not None for it in img.nearest)
    with pytest.raises(ValueError, match="not in the catalogue"):
        personaliser.image_set(user, 4, classes=["no-such-class"])


def test_without_optimisation_the_set_is_the_conditioned_one(personaliser):
    user = personaliser.bundle.embeddings.user_ids[7]
    plain = personaliser.image_set(user, 4, optimise=False)
    assert all(personaliser.ids.decode(i.image_id).latent is None for i in plain.images)
    assert all(not i.explanation.optimised for i in plain.images)


def test_a_bundle_without_a_visual_encoder_still_loads_and_serves(trained_artifacts, tmp_path):
    root, version = trained_artifacts
    old = tmp_path / version
    shutil.copytree(root / version, old)
    shutil.rmtree(old / "visual")
    manifest = json.loads((old / "manifest.json").read_text())
    manifest.pop(CHECKSUMS)  # bundles from before the visual encoder carried no checksums either
    (old / "manifest.json").write_text(json.dumps(manifest))
    p = Personaliser(load_bundle(old), PersonaliserConfig())
    assert p.preference.visual is None and not p.preference.available
    result = p.image_set(str(p.bundle.embeddings.user_ids[0]), 3)
    assert len(result.images) == 3 and all(p.ids.decode(i.image_id).latent is None for i in result.images)
