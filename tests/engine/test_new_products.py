"""Images of new products: ids for combinations the catalogue lacks, seeded images, judged and grounded."""

import io
import itertools

import numpy as np
import pytest
from PIL import Image

from engine.artifacts.bundle import load_bundle
from engine.serving.image_ids import ImageIdCodec, stable_seed
from engine.serving.personaliser import Personaliser
from engine.serving.products import UnknownAttributes
from engine.serving.types import UnknownImage

KEY = b"test-image-key-0123456789"
CATALOGUE = np.array([[0, 0, 0], [1, 2, 3], [2, 1, 0]])
CARDS = (3, 3, 4)


def test_ids_name_combinations_past_the_catalogue_table():
    codec = ImageIdCodec("v1", CATALOGUE, KEY, cardinalities=CARDS)
    assert codec.row_of([1, 2, 3]) == 1  # a catalogue condition keeps its row
    novel = [2, 2, 1]
    row = codec.row_of(novel)
    assert row == len(CATALOGUE) + np.ravel_multi_index(novel, CARDS)
    ref = codec.decode(codec.encode(row, stable_seed("s")))
    assert ref.codes.tolist() == novel and ref.condition == row
    last = len(CATALOGUE) + int(np.prod(CARDS)) - 1
    assert codec.decode(codec.encode(last, 7)).codes.tolist() == [2, 2, 3]
    with pytest.raises(ValueError):
        codec.encode(last + 1, 7)
    with pytest.raises(ValueError, match="outside"):
        codec.row_of([3, 0, 0])
    # a codec of the catalogue alone names only its conditions, and refuses an id of another row
    plain = ImageIdCodec("v1", CATALOGUE, KEY)
    with pytest.raises(ValueError, match="not one of"):
        plain.row_of(novel)
    with pytest.raises(UnknownImage, match="condition this bundle does not have"):
        plain.decode(codec.encode(row, 7))


@pytest.fixture(scope="module")
def personaliser(sparse_artifacts):
    """A bundle whose catalogue lacks one combination (``sparse_artifacts``)."""
    root, version, _ = sparse_artifacts
    return Personaliser(load_bundle(root / version), key=KEY)


def combination(personaliser, *, in_catalogue: bool) -> dict[str, str]:
    """The first combination of the bundle's values (in vocabulary order) that the catalogue has, or lacks."""
    enc = personaliser.bundle.encoder
    have = {tuple(int(v) for v in c) for c in personaliser.bundle.codes}
    for codes in itertools.product(*(range(c) for c in enc.cardinalities)):
        if (codes in have) == in_catalogue:
            return enc.decode(np.array(codes))
    raise AssertionError("no such combination")


def test_the_missing_combination_is_the_one_the_catalogue_lacks(personaliser, sparse_artifacts):
    assert combination(personaliser, in_catalogue=False) == sparse_artifacts[2]


def test_a_combination_the_catalogue_lacks_is_drawn_judged_and_grounded(personaliser):
    values = combination(personaliser, in_catalogue=False)
    result = personaliser.new_product_images(values, 3, seed=0, neighbours=2)
    assert result.condition == values and not result.in_catalogue and result.catalogue_items == 0
    assert result.grounded_within_class
    assert len({img.image_id for img in result.images}) == 3
    for img in result.images:
        assert set(img.judged) == set(values) and all(0.0 <= p <= 1.0 for p in img.judged.values())
        assert len(img.nearest) == 2 and all(it.attributes["class"] == values["class"] for it in img.nearest)
        ref = personaliser.ids.decode(img.image_id)
        assert personaliser.bundle.encoder.decode(ref.codes) == values


def test_a_combination_in_the_catalogue_says_how_many_items_have_it(personaliser):
    values = combination(personaliser, in_catalogue=True)
    result = personaliser.new_product_images(values, 1)
    codes = personaliser.bundle.encoder.encode(values)
    assert result.in_catalogue
    assert result.catalogue_items == int((personaliser.bundle.codes == codes).all(axis=1).sum()) > 0


def test_the_seed_decides_the_images_and_any_worker_renders_them_again(personaliser, sparse_artifacts):
    values = combination(personaliser, in_catalogue=False)
    first = personaliser.new_product_images(values, 2, seed=5)
    again = personaliser.new_product_images(values, 2, seed=5)
    other = personaliser.new_product_images(values, 2, seed=6)
    assert [i.image_id for i in first.images] == [i.image_id for i in again.images]
    assert not {i.image_id for i in first.images} & {i.image_id for i in other.images}
    cached = personaliser.render_png(first.images[0].image_id)
    root, version, _ = sparse_artifacts
    worker = Personaliser(load_bundle(root / version), key=KEY)  # another process: nothing cached
    assert worker.render_png(first.images[0].image_id) == cached
    assert Image.open(io.BytesIO(cached)).size == (64, 64)


def test_the_image_changes_with_the_combination_asked_for(personaliser):
    values = combination(personaliser, in_catalogue=False)
    enc = personaliser.bundle.encoder
    colours = enc.values_["colour"]
    recoloured = {**values, "colour": next(c for c in colours if c != values["colour"])}
    a = personaliser.render_png(personaliser.new_product_images(values, 1, seed=1).images[0].image_id)
    b = personaliser.render_png(personaliser.new_product_images(recoloured, 1, seed=1).images[0].image_id)
    pa, pb = (np.asarray(Image.open(io.BytesIO(x)), dtype=np.float64) for x in (a, b))
    assert np.abs(pa - pb).mean() > 0.05  # the same noise (same seed and slot): only the label differs


def test_unknown_missing_and_extra_attributes_are_all_named_with_the_known_values(personaliser):
    enc = personaliser.bundle.encoder
    with pytest.raises(UnknownAttributes) as caught:
        personaliser.new_product_images({"class": "spaceship", "colour": enc.values_["colour"][0], "sleeve": "x"}, 1)
    problems = caught.value.problems
    assert any("unknown class 'spaceship'" in p and enc.values_["class"][0] in p for p in problems)
    assert any(p.startswith("pattern is missing") and enc.values_["pattern"][0] in p for p in problems)
    assert any("'sleeve' is not an attribute" in p for p in problems)
    with pytest.raises(ValueError, match="n must be between"):
        personaliser.new_product_images(combination(personaliser, in_catalogue=True), 0)
