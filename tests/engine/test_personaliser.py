"""The Personaliser on a small trained bundle: distributions, seeding, grounding."""

import numpy as np
import pytest

from engine.bundle import load_bundle
from engine.personaliser import Personaliser, UnknownImage, stable_seed


@pytest.fixture(scope="module")
def personaliser(trained_artifacts):
    root, version = trained_artifacts
    return Personaliser(load_bundle(root / version))


def test_condition_choice_is_distinct_while_support_allows_and_follows_p(personaliser):
    p = np.zeros(len(personaliser.conditions))
    p[[3, 5, 7]] = [0.6, 0.3, 0.1]
    chosen = personaliser.choose_conditions(p, 3, seed=1)
    assert sorted(chosen) == [3, 5, 7]
    longer = personaliser.choose_conditions(p, 5, seed=1)
    assert set(longer) == {3, 5, 7} and len(longer) == 5  # repeats only once the support is used up
    # over many seeds the first pick follows p
    firsts = [personaliser.choose_conditions(p, 1, seed=s)[0] for s in range(2000)]
    assert abs(np.mean(np.array(firsts) == 3) - 0.6) < 0.05


def test_cold_start_distribution_is_catalogue_popularity(personaliser):
    p = personaliser.condition_distribution(None)
    assert p.sum() == pytest.approx(1.0)
    cat = personaliser.bundle.catalogue
    top_item_codes = personaliser.bundle.codes[int(np.argmax(cat["popularity"].to_numpy()))]
    top_condition = np.flatnonzero((personaliser.conditions == top_item_codes).all(axis=1))[0]
    assert p[top_condition] > 1.0 / len(p)


def test_a_shoppers_distribution_puts_mass_on_the_conditions_of_their_top_items(personaliser):
    bundle = personaliser.bundle
    user = bundle.embeddings.user_ids[0]
    vector = personaliser.user_vector(user)
    p = personaliser.condition_distribution(vector)
    assert p.sum() == pytest.approx(1.0)
    top, _ = bundle.embeddings.recommend(vector, 1)
    best_item = bundle.embeddings.item_ids[top[0]]
    row = int(np.flatnonzero(bundle.catalogue["item_id"].to_numpy() == best_item)[0])
    cond = np.flatnonzero((personaliser.conditions == bundle.codes[row]).all(axis=1))[0]
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

    from engine.gan_training import to_tensor_images
    from features.images import load_image

    bundle = personaliser.bundle
    row = int(np.flatnonzero(bundle.catalogue["has_image"].to_numpy())[0])
    item = bundle.catalogue.iloc[row]
    photo = load_image(bundle.image_root / item["image"], 64)
    x = to_tensor_images(photo[None]).float().div(127.5).sub(1.0)
    nearest = personaliser.nearest_items(x, 3)[0]
    assert nearest[0].item_id == item["item_id"]
    assert nearest[0].similarity == pytest.approx(1.0, abs=1e-4)
    assert torch.is_tensor(x)


def test_render_refuses_ids_of_other_bundles(personaliser):
    with pytest.raises(UnknownImage, match="no longer serves"):
        personaliser.render_png("20000101T000000Z-abcdef_0.0.0_0000000000000001")
