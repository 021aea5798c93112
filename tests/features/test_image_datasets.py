"""Known answers for the labelled image readers: Fashion-MNIST IDX files and the Myntra layout."""

import gzip
import re
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from features.image_datasets import FASHION_MNIST_CLASSES, hash_split, read_fashion_mnist, read_myntra

# ---------------------------------------------------------------------------------------------- Fashion-MNIST


def write_idx_images(path: Path, images: np.ndarray, *, magic: int = 2051, n: int | None = None) -> None:
    """An IDX3 file: big-endian magic, count, rows, cols, then uint8 pixels (``n`` overrides the count)."""
    count = len(images) if n is None else n
    header = struct.pack(">IIII", magic, count, images.shape[1], images.shape[2])
    with gzip.open(path, "wb") as fh:
        fh.write(header + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray, *, magic: int = 2049, n: int | None = None) -> None:
    count = len(labels) if n is None else n
    with gzip.open(path, "wb") as fh:
        fh.write(struct.pack(">II", magic, count) + labels.astype(np.uint8).tobytes())


def fake_images(n: int, first: int) -> np.ndarray:
    """Image k is filled with ``first + k`` (never 0, so the black padding stands out) and has a bright
    marker in its top-left pixel, so an orientation or offset error shows."""
    images = np.empty((n, 28, 28), dtype=np.uint8)
    for k in range(n):
        images[k] = first + k
        images[k, 0, 0] = 250
    return images


TRAIN_LABELS = np.array([0, 9, 3, 5, 1, 8])
TEST_LABELS = np.array([7, 2, 4, 6])


def write_fashion_mnist(folder: Path) -> Path:
    """A fake Fashion-MNIST folder: 6 training and 4 test images, the four official file names."""
    folder.mkdir(parents=True, exist_ok=True)
    write_idx_images(folder / "train-images-idx3-ubyte.gz", fake_images(6, 10))
    write_idx_labels(folder / "train-labels-idx1-ubyte.gz", TRAIN_LABELS)
    write_idx_images(folder / "t10k-images-idx3-ubyte.gz", fake_images(4, 100))
    write_idx_labels(folder / "t10k-labels-idx1-ubyte.gz", TEST_LABELS)
    return folder


def test_fashion_mnist_is_padded_with_black_to_32_and_keeps_its_content_centred(tmp_path):
    ds = read_fashion_mnist(write_fashion_mnist(tmp_path), size=32)
    assert ds.images.shape == (10, 32, 32, 1) and ds.images.dtype == np.uint8
    # a 2-pixel black border on every side, the 28x28 content inside it untouched
    border = np.ones((32, 32), dtype=bool)
    border[2:30, 2:30] = False
    assert (ds.images[:, border, 0] == 0).all()
    expected = np.concatenate([fake_images(6, 10), fake_images(4, 100)])
    np.testing.assert_array_equal(ds.images[:, 2:30, 2:30, 0], expected)
    assert (ds.images[:, 2, 2, 0] == 250).all()  # the marker sits at the content's top-left corner


def test_fashion_mnist_labels_are_class_names_and_t10k_is_the_test_split(tmp_path):
    ds = read_fashion_mnist(write_fashion_mnist(tmp_path))
    assert ds.attributes == ("class",)
    assert list(ds.labels.columns) == ["class"]
    codes = np.concatenate([TRAIN_LABELS, TEST_LABELS])
    assert list(ds.labels["class"]) == [FASHION_MNIST_CLASSES[c] for c in codes]
    assert ds.labels["class"].iloc[1] == "Ankle boot" and ds.labels["class"].iloc[6] == "Sneaker"
    assert ds.is_test.dtype == bool
    np.testing.assert_array_equal(ds.is_test, [False] * 6 + [True] * 4)
    assert ds.name == "fashion_mnist" and ds.rule


def test_fashion_mnist_size_28_leaves_the_images_as_they_are(tmp_path):
    ds = read_fashion_mnist(write_fashion_mnist(tmp_path), size=28)
    np.testing.assert_array_equal(ds.images[:6, ..., 0], fake_images(6, 10))
    with pytest.raises(ValueError, match="at least 28"):
        read_fashion_mnist(tmp_path, size=24)


def test_truncated_image_file_names_the_file(tmp_path):
    folder = write_fashion_mnist(tmp_path)
    bad = folder / "t10k-images-idx3-ubyte.gz"
    write_idx_images(bad, fake_images(3, 100), n=4)  # header says 4, data hold 3
    with pytest.raises(ValueError, match=re.escape(bad.name) + ".*truncated"):
        read_fashion_mnist(folder)


def test_truncated_label_file_names_the_file(tmp_path):
    folder = write_fashion_mnist(tmp_path)
    bad = folder / "train-labels-idx1-ubyte.gz"
    write_idx_labels(bad, TRAIN_LABELS[:5], n=6)
    with pytest.raises(ValueError, match=re.escape(bad.name) + ".*truncated"):
        read_fashion_mnist(folder)


def test_wrong_magic_names_the_file(tmp_path):
    folder = write_fashion_mnist(tmp_path)
    # an images file where a labels file should be: magic 2051 instead of 2049
    swapped = folder / "train-labels-idx1-ubyte.gz"
    write_idx_images(swapped, fake_images(6, 10))
    with pytest.raises(ValueError, match=re.escape(swapped.name) + ".*magic 2051, expected 2049"):
        read_fashion_mnist(folder)


def test_images_and_labels_of_different_lengths_are_refused(tmp_path):
    folder = write_fashion_mnist(tmp_path)
    write_idx_labels(folder / "t10k-labels-idx1-ubyte.gz", TEST_LABELS[:3])
    with pytest.raises(ValueError, match="4 images but 3 labels"):
        read_fashion_mnist(folder)


@pytest.mark.parametrize(
    "missing", ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"]
)
def test_missing_files_raise_file_not_found(tmp_path, missing):
    folder = write_fashion_mnist(tmp_path)
    (folder / missing).unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
        read_fashion_mnist(folder)


def test_an_empty_folder_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="Fashion-MNIST"):
        read_fashion_mnist(tmp_path)


# ---------------------------------------------------------------------------------------------- Myntra

RGB = {"Blue": (0, 0, 255), "Red": (255, 0, 0), "Green": (0, 160, 0)}

# (id, articleType, baseColour, has an image file)
MYNTRA_ROWS = [
    *[(i, "Tshirts", "Blue", True) for i in (1, 2, 3)],
    *[(i, "Tshirts", "Red", True) for i in (4, 5)],
    *[(i, "Jeans", "Blue", True) for i in (6, 7, 8)],
    (9, "Jeans", "Red", True),
    (10, "Watches", "Blue", True),  # Watches: 2 images < min_class
    (11, "Watches", "Red", True),
    (12, "Socks", "Blue", True),  # Socks: 4 rows but only 2 with an image
    (13, "Socks", "Blue", True),
    (14, "Socks", "Blue", False),
    (15, "Socks", "Blue", False),
    (16, "Tshirts", "Green", True),  # Green: 1 image < min_colour
    (17, "Tshirts", "", True),  # no colour: left out
    (18, "Jeans", "Blue", False),  # no image: left out
]
KEPT_IDS = [1, 2, 3, 4, 5, 6, 7, 8, 9]


def write_myntra(folder: Path, *, corrupt_id: int | None = None) -> Path:
    """styles.csv (with an extra column, as the real one has) and 30x40 (3:4) solid-colour JPEGs."""
    (folder / "images").mkdir(parents=True)
    rows = list(MYNTRA_ROWS) + ([(corrupt_id, "Tshirts", "Blue", True)] if corrupt_id else [])
    styles = pd.DataFrame(
        {
            "id": [r[0] for r in rows],
            "gender": "Men",
            "articleType": [r[1] for r in rows],
            "baseColour": [r[2] for r in rows],
        }
    )
    styles.to_csv(folder / "styles.csv", index=False)
    for i, _, colour, has_image in rows:
        if not has_image:
            continue
        if i == corrupt_id:
            (folder / "images" / f"{i}.jpg").write_bytes(b"not a jpeg")
        else:
            Image.new("RGB", (30, 40), RGB.get(colour, (128, 128, 128))).save(folder / "images" / f"{i}.jpg")
    return folder


def test_myntra_keeps_frequent_classes_and_colours_with_images(tmp_path):
    ds = read_myntra(write_myntra(tmp_path), size=16, min_class=3, min_colour=3, show_progress=False)
    assert ds.attributes == ("class", "colour")
    assert len(ds.images) == len(ds.labels) == len(ds.is_test) == len(KEPT_IDS)
    assert set(ds.labels["class"]) == {"Tshirts", "Jeans"}
    assert set(ds.labels["colour"]) == {"Blue", "Red"}
    expected = sorted((r[1], r[2]) for r in MYNTRA_ROWS if r[0] in KEPT_IDS)
    assert sorted(zip(ds.labels["class"], ds.labels["colour"], strict=True)) == expected
    assert ds.rule == ("articleType with >= 3 images (2 kept), baseColour with >= 3 images (2 kept); 9 images")
    assert ds.is_test.dtype == bool


def test_myntra_thresholds_are_inclusive(tmp_path):
    # Jeans has exactly 4 images and Red exactly 4: at 4 both stay, at 5 both go
    folder = write_myntra(tmp_path)
    at4 = read_myntra(folder, size=16, min_class=4, min_colour=4, show_progress=False)
    assert set(at4.labels["class"]) == {"Tshirts", "Jeans"} and set(at4.labels["colour"]) == {"Blue", "Red"}
    at5 = read_myntra(folder, size=16, min_class=5, min_colour=5, show_progress=False)
    assert set(at5.labels["class"]) == {"Tshirts"} and set(at5.labels["colour"]) == {"Blue"}
    assert len(at5.images) == 3


def test_myntra_letterboxes_on_white_and_images_match_their_labels(tmp_path):
    ds = read_myntra(write_myntra(tmp_path), size=16, min_class=3, min_colour=3, show_progress=False)
    assert ds.images.shape == (9, 16, 16, 3) and ds.images.dtype == np.uint8
    # 30x40 scaled to 12x16, centred: two white columns on each side, the full height used
    assert (ds.images[:, :, :2] == 255).all() and (ds.images[:, :, 14:] == 255).all()
    for image, colour in zip(ds.images, ds.labels["colour"], strict=True):
        centre = image[4:12, 5:11].reshape(-1, 3).astype(int)
        assert np.abs(centre - np.array(RGB[colour])).max() <= 12, colour  # JPEG is lossy, not that lossy


def test_myntra_skips_unreadable_images(tmp_path):
    ds = read_myntra(write_myntra(tmp_path, corrupt_id=99), size=16, min_class=3, min_colour=3, show_progress=False)
    assert len(ds.images) == 9
    assert ds.rule.endswith("; 9 images")
    assert (ds.images != 255).any(axis=(1, 2, 3)).all()  # no blank placeholder left in


def test_myntra_max_images_samples_the_kept_rows(tmp_path):
    ds = read_myntra(write_myntra(tmp_path), size=16, min_class=3, min_colour=3, max_images=4, show_progress=False)
    assert len(ds.images) == len(ds.labels) == 4
    assert set(ds.labels["class"]) <= {"Tshirts", "Jeans"}


def test_myntra_without_styles_csv_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"styles\.csv"):
        read_myntra(tmp_path, show_progress=False)


# ---------------------------------------------------------------------------------------------- hash_split


def test_hash_split_is_deterministic_per_id_and_a_bool_array():
    ids = pd.Series([str(i) for i in range(200)])
    first = hash_split(ids, 0.2, "salt")
    assert first.dtype == bool and first.shape == (200,)
    np.testing.assert_array_equal(first, hash_split(ids, 0.2, "salt"))
    # an id's side depends on the id alone, not on its position or its neighbours
    np.testing.assert_array_equal(hash_split(ids[::-1], 0.2, "salt"), first[::-1])
    np.testing.assert_array_equal(hash_split(ids[:50], 0.2, "salt"), first[:50])
    assert not np.array_equal(first, hash_split(ids, 0.2, "another salt"))


def test_hash_split_of_nothing_is_an_empty_bool_array():
    out = hash_split(pd.Series([], dtype=str), 0.2, "salt")
    assert out.dtype == bool and out.shape == (0,)


@pytest.mark.parametrize("share", [0.0, 0.2, 0.5, 1.0])
def test_hash_split_gives_the_requested_share(share):
    out = hash_split(pd.Series(range(5000)), share, "vitrine-myntra")
    assert out.mean() == pytest.approx(share, abs=0.02)


def test_hash_split_shares_nest():
    # raising the share only moves ids into test: the split is a threshold on one hash per id
    ids = pd.Series(range(1000))
    small, large = hash_split(ids, 0.1, "s"), hash_split(ids, 0.3, "s")
    assert (small <= large).all() and small.sum() < large.sum()
