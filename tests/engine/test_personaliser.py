"""The Personaliser on a small trained bundle: distributions, seeding, grounding."""

import numpy as np
import pytest

from engine.artifacts.bundle import load_bundle
from engine.serving.image_ids import ImageIdCodec, stable_seed
from engine.serving.personaliser import Personaliser
from engine.serving.preference import mmr_relevance
from engine.serving.types import UnknownImage

KEY = b"test-image-key-0123456789"


@pytest.fixture(scope="module")
def personaliser(trained_artifacts):
    root, version = trained_artifacts
    return Personaliser(load_bundle(root / version), key=KEY)


def test_condition_choice_is_distinct_while_support_allows_and_follows_p(personaliser):
    p = np.zeros(len(personaliser.conditions.codes))
    p[[3, 5, 7]] = [0.6, 0.3, 0.1]
    chosen = personaliser.conditions.choose(p, 3, seed=1)
    assert sorted(chosen) == [3, 5, 7]
    longer = personaliser.conditions.choose(p, 5, seed=1)
    assert set(longer) == {3, 5, 7} and len(longer) == 5  # repeats only once the support is used up
    # over many seeds the first pick follows p
    firsts = [personaliser.conditions.choose(p, 1, seed=s)[0] for s in range(2000)]
    assert abs(np.mean(np.array(firsts) == 3) - 0.6) < 0.05


def test_cold_start_distribution_is_catalogue_popularity(personaliser):
    p = personaliser.conditions.distribution(None)
    assert p.sum() == pytest.approx(1.0)
    cat = personaliser.bundle.catalogue
    top_item_codes = personaliser.bundle.codes[int(np.argmax(cat["popularity"].to_numpy()))]
    top_condition = np.flatnonzero((personaliser.conditions.codes == top_item_codes).all(axis=1))[0]
    assert p[top_condition] > 1.0 / len(p)


def test_a_shoppers_distribution_puts_mass_on_the_conditions_of_their_top_items(personaliser):
    bundle = personaliser.bundle
    user = bundle.embeddings.user_ids[0]
    vector = personaliser.shoppers.user_vector(user)
    p = personaliser.conditions.distribution(vector)
    assert p.sum() == pytest.approx(1.0)
    top, _ = bundle.embeddings.recommend(vector, 1)
    best_item = bundle.embeddings.item_ids[top[0]]
    row = int(np.flatnonzero(bundle.catalogue["item_id"].to_numpy() == best_item)[0])
    cond = np.flatnonzero((personaliser.conditions.codes == bundle.codes[row]).all(axis=1))[0]
    assert p[cond] >= 1.0 / personaliser.config.top_items  # the top item's condition carries its rank weight


def test_image_sets_are_stable_per_user_and_differ_between_users(personaliser):
    users = personaliser.bundle.embeddings.user_ids[:2]
    a1 = personaliser.image_set(users[0], 4)
    a2 = personaliser.image_set(users[0], 4)
    b = personaliser.image_set(users[1], 4)
    assert [i.image_id for i in a1.images] == [i.image_id for i in a2.images]
    assert [i.image_id for i in a1.images] != [i.image_id for i in b.images]
    assert stable_seed("x", 1) == stable_seed("x", 1) != stable_seed("x", 2)


def test_nearest_items_of_a_catalogue_photo_start_with_itself(personaliser):
    import torch

    from features.images import load_image
    from models.pixels import to_tensor_images

    bundle = personaliser.bundle
    row = int(np.flatnonzero(bundle.catalogue["has_image"].to_numpy())[0])
    item = bundle.catalogue.iloc[row]
    photo = load_image(bundle.image_root / item["image"], 64)
    x = to_tensor_images(photo[None]).float().div(127.5).sub(1.0)
    nearest = personaliser.grounding.nearest_items(x, 3)[0]
    assert nearest[0].item_id == item["item_id"]
    assert nearest[0].similarity == pytest.approx(1.0, abs=1e-4)
    assert torch.is_tensor(x)


def test_render_refuses_ids_of_other_bundles(personaliser):
    other = ImageIdCodec("20000101T000000Z-abcdef", personaliser.conditions.codes, KEY)  # same key, old bundle
    with pytest.raises(UnknownImage, match=r"no longer serves.*request a new image set"):
        personaliser.render_png(other.encode(0, 1))


def test_distinct_picks_give_each_item_once_to_the_image_it_resembles_most():
    from engine.serving.grounding import distinct_picks

    # two images whose pools share items 7 and 8; the shopper likes 7 best, then 8, then 1, then 2
    items = [np.array([7, 8, 1]), np.array([8, 7, 2])]
    sims = [np.array([0.9, 0.5, 0.4]), np.array([0.95, 0.6, 0.3])]
    score = {7: 4.0, 8: 3.0, 1: 2.0, 2: 1.0}
    scores = [np.array([score[i] for i in row]) for row in items]
    picks = distinct_picks(scores, sims, items, 2)
    got = [sorted(items[p][pk].tolist()) for p, pk in enumerate(picks)]
    # 7 goes to image 0 (0.9 > 0.6), 8 to image 1 (0.95 > 0.5); each then takes its best own item
    assert got == [[1, 7], [2, 8]]
    flat = [i for g in got for i in g]
    assert len(flat) == len(set(flat))


def test_distinct_picks_fall_back_to_shared_items_when_a_pool_runs_dry():
    from engine.serving.grounding import distinct_picks

    items = [np.array([5, 6]), np.array([5, 6])]
    scores = [np.array([2.0, 1.0]), np.array([2.0, 1.0])]
    sims = [np.array([0.9, 0.8]), np.array([0.1, 0.2])]
    picks = distinct_picks(scores, sims, items, 2)
    assert sorted(items[0][picks[0]].tolist()) == [5, 6]  # image 0 resembles both more: takes both
    assert sorted(items[1][picks[1]].tolist()) == [5, 6]  # image 1 is left short, so it shares them


def test_cold_calibration_recovers_the_factor_scale():
    from engine.serving.grounding import cold_calibration

    rng = np.random.default_rng(0)
    users = rng.normal(size=(300, 8))
    factors = rng.normal(size=(50, 8))
    # image vectors that predict the factors at 3× their scale, plus noise: the fit maps them back
    visual = 3.0 * factors + 0.3 * rng.normal(size=factors.shape)
    slope, intercept = cold_calibration(users, factors, visual)
    assert slope == pytest.approx(1 / 3, rel=0.05)
    assert abs(intercept) < 0.05
    # image vectors that say nothing about the factors get a slope near 0: cold items score near the mean
    slope0, _ = cold_calibration(users, factors, rng.normal(size=factors.shape))
    assert abs(slope0) < 0.05


def test_a_shoppers_set_leads_to_distinct_items(personaliser):
    user = personaliser.bundle.embeddings.user_ids[3]
    s = personaliser.image_set(user, 4, neighbours=3)
    items = [it.item_id for img in s.images for it in img.nearest]
    assert len(items) == 12 and len(set(items)) == 12
    for img in s.images:  # each image's items are listed most similar first
        sims = [it.similarity for it in img.nearest]
        assert sims == sorted(sims, reverse=True)


def test_condition_grounding_brings_the_shoppers_items_of_the_images_class(personaliser):
    bundle = personaliser.bundle
    feats = personaliser.grounding.index_features
    classes = personaliser.catalogue.index_class
    a, b = np.unique(classes)[:2]
    photo = int(np.flatnonzero(classes == a)[0])  # an image that looks like a class-a item ...
    condition = personaliser.catalogue.index_codes[int(np.flatnonzero(classes == b)[0])]  # ... generated as class b
    vector = bundle.embeddings.user_factors[0]
    shopper = personaliser.grounding.index_vectors @ vector + personaliser.grounding.index_offsets
    pool = (np.array([1.0], np.float32), np.array([photo]))
    keep = np.ones(len(classes), bool)
    sims, rows = personaliser.grounding._with_condition_items(pool, feats[photo], condition, keep, shopper, want=5)
    added = rows[rows != photo]
    in_b = np.flatnonzero(classes == b)
    best_b = in_b[np.argsort(-shopper[in_b])[:5]]
    assert set(added) == set(best_b)  # the shopper's five best class-b items, wherever they lie
    assert np.allclose(sims[rows == added[0]], feats[added[0]] @ feats[photo], atol=1e-5)
    assert (np.diff(sims) <= 1e-6).all()  # still in similarity order
    # through nearest_items: the pool only grows, so the kept items are at least as liked
    plain = personaliser.grounding.nearest_items(None, 3, features=feats[photo][None], user_vector=vector)[0]
    grounded = personaliser.grounding.nearest_items(
        None, 3, features=feats[photo][None], user_vector=vector, conditions=condition[None]
    )[0]
    assert min(it.shopper_score for it in grounded) >= min(it.shopper_score for it in plain) - 1e-6


def test_mmr_relevance_weighs_the_shoppers_condition_probability_beside_the_visual_preference():
    preference = np.array([1.0, 1.1, 0.9, 1.0])
    p = np.array([0.5, 0.05, 0.3, 0.0])  # the last candidate's condition has no support
    alone = mmr_relevance(preference, p, 0.0)
    assert np.argmax(alone) == 1  # the visual preference alone prefers the unlikely condition
    both = mmr_relevance(preference, p, 1.0)
    assert np.argmax(both) == 0 and np.argmin(both) == 3
    assert np.isfinite(both).all()
    # equal probabilities add nothing: the order is the visual preference's
    assert (np.argsort(mmr_relevance(preference, np.full(4, 0.25), 1.0)) == np.argsort(alone)).all()
