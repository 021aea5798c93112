"""Automatic tagging: reading uploads, a classifier's top-k answers on a known-answer image set, folders to CSV,
and the tagging evaluation of a bundle measuring exactly what serving answers."""

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.serving.tagging import BadImage, Tagger, decode_image, tag_folder
from engine.training.classifier import ClassifierTrainConfig, train_classifier
from features.attributes import AttributeEncoder
from models.classifier import ClassifierConfig
from tests.engine.coloured_squares import PALETTE, colour_dataset

COLOURS = ("red", "green", "blue")


def encoded(image: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def squares_tagger() -> Tagger:
    """A classifier trained on coloured squares (label = colour) behind a one-attribute vocabulary."""
    images, labels = colour_dataset(480, size=32, seed=0)
    config = ClassifierConfig(attribute_names=("colour",), cardinalities=(3,), image_size=32, width=8, feature_dim=16)
    net, _ = train_classifier(
        images, labels, config, ClassifierTrainConfig(epochs=4, batch_size=32, holdout=0.0), show_progress=False
    )
    # the palette's order, which is not the sorted order a fitted encoder would give
    encoder = AttributeEncoder.from_dict({"attributes": ["colour"], "min_count": 1, "values": {"colour": COLOURS}})
    return Tagger(net.eval(), encoder)


def test_a_png_and_a_jpeg_read_as_the_catalogue_reads_photos():
    photo = np.full((40, 20, 3), 255, dtype=np.uint8)
    photo[:, :, 1:] = 0  # a red 2:1 portrait
    out = decode_image(encoded(photo), 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert (out[:, 0] == 255).all() and tuple(out[16, 16]) == (255, 0, 0)  # letterboxed on white, aspect kept
    assert decode_image(encoded(photo, "JPEG"), 32)[16, 16, 0] > 200


def test_transparent_pixels_show_the_white_background():
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)  # black, and fully transparent
    buf = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buf, format="PNG")
    assert (decode_image(buf.getvalue(), 32) == 255).all()


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "empty"),
        (b"certainly not an image", "not a readable"),
        (encoded(np.zeros((4, 4, 3), dtype=np.uint8))[:40], "not a readable"),  # truncated
    ],
)
def test_bytes_that_are_no_png_or_jpeg_are_refused_saying_what_to_send(data, says):
    with pytest.raises(BadImage, match=says):
        decode_image(data, 32)


def test_other_formats_and_huge_images_are_refused_before_decoding():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="GIF")
    with pytest.raises(BadImage, match="PNG or JPEG"):
        decode_image(buf.getvalue(), 32)
    with pytest.raises(BadImage, match="100x100 pixels"):
        decode_image(encoded(np.zeros((100, 100, 3), dtype=np.uint8)), 32, max_pixels=50 * 50)


def test_the_tagger_names_the_colour_of_each_square_with_probabilities(squares_tagger):
    images, labels = colour_dataset(60, size=32, seed=5)  # squares it never saw
    probs = squares_tagger.probabilities(images)[0]
    assert probs.shape == (60, 3)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    tags = squares_tagger.tag(images, top_k=2)
    best = np.array([COLOURS.index(t["colour"][0].value) for t in tags])
    assert (best == labels[:, 0]).mean() >= 0.9
    for t in tags:
        ps = [g.probability for g in t["colour"]]
        assert len(ps) == 2 and ps == sorted(ps, reverse=True)
    everything = squares_tagger.tag(images[:1], top_k=10)[0]["colour"]  # more than the attribute has: all of them
    assert sorted(g.value for g in everything) == sorted(COLOURS)


def test_an_uploaded_square_is_tagged_by_its_colour(squares_tagger):
    image = np.full((32, 32, 3), 235, dtype=np.uint8)
    image[4:20, 8:24] = PALETTE[2]
    assert squares_tagger.tag_bytes(encoded(image), top_k=1)["colour"][0].value == "blue"


def test_a_folder_is_tagged_into_one_row_per_photo(squares_tagger, tmp_path):
    images, labels = colour_dataset(5, size=32, seed=9)
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for k, image in enumerate(images):
        folder = tmp_path / "in" / ("sub" if k % 2 else "")
        (folder / f"p{k}.png").write_bytes(encoded(image))
    (tmp_path / "in" / "broken.jpg").write_bytes(b"not a photo")
    (tmp_path / "in" / "notes.txt").write_text("not read")
    summary = tag_folder(squares_tagger, tmp_path / "in", tmp_path / "tags.csv", top_k=2, show_progress=False)
    assert summary["images"] == 6 and summary["tagged"] == 5 and summary["failed"] == 1
    rows = list(csv.DictReader((tmp_path / "tags.csv").open()))
    assert len(rows) == 6
    assert [r["path"] for r in rows] == sorted(r["path"] for r in rows)
    broken = next(r for r in rows if r["path"] == "broken.jpg")
    assert broken["colour"] == "" and "not a readable" in broken["error"]
    for r in rows:
        if r["path"] != "broken.jpg":
            k = int(Path(r["path"]).stem.removeprefix("p"))
            assert r["colour"] == COLOURS[labels[k, 0]] and r["error"] == ""
            assert 0 < float(r["colour_probability"]) <= 1 and len(r["colour_top"].split("|")) == 2
