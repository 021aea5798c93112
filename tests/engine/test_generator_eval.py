"""Known answers for every metric of the generator harness."""

import numpy as np
import pytest
import torch

from engine.evaluation.generator import (
    conditional_accuracy,
    evaluate_generator,
    frechet_distance,
    generate_images,
    intra_class_diversity,
    kid,
    memorisation,
    nearest_neighbours,
    prdc,
)
from models.classifier import AttributeClassifier, ClassifierConfig
from models.inception import local_inception_weights


def gaussian(n: int, d: int = 8, shift: float = 0.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


def test_frechet_distance_known_answers():
    a = gaussian(2000)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # two Gaussians with identity covariance: FD = ‖μa − μb‖² (here 8 · 1² = 8), up to sampling noise
    assert frechet_distance(a, gaussian(2000, shift=1.0, seed=1)) == pytest.approx(8.0, rel=0.1)
    # scale only: N(0, I) vs N(0, 4I) in d dims: FD = d (1 + 4 − 2·2) = d
    assert frechet_distance(a, 2 * gaussian(2000, seed=2)) == pytest.approx(8.0, rel=0.15)
    near, far = (
        frechet_distance(a, gaussian(2000, shift=0.1, seed=3)),
        frechet_distance(a, gaussian(2000, shift=1, seed=3)),
    )
    assert near < far


def test_frechet_distance_survives_singular_covariances():
    a = np.zeros((50, 4))
    a[:, 0] = np.arange(50)  # rank-1 covariance: sqrtm of a singular product
    assert np.isfinite(frechet_distance(a, a + 1.0))
    assert frechet_distance(a, a + 1.0) == pytest.approx(4.0, abs=1e-3)


def test_kid_is_zero_within_its_std_for_one_distribution_and_large_for_a_shift():
    same_mean, same_std = kid(gaussian(1500, seed=1), gaussian(1500, seed=2), subsets=50, subset_size=500)
    assert abs(same_mean) < 3 * same_std + 1e-4
    shifted_mean, shifted_std = kid(
        gaussian(1500, seed=1), gaussian(1500, shift=1.0, seed=2), subsets=50, subset_size=500
    )
    assert shifted_mean > 10 * max(shifted_std, abs(same_mean))


def test_prdc_known_answers():
    real = gaussian(400, seed=0)
    same = prdc(real, real.copy(), k=5)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    assert same["density"] >= 1.0
    far = prdc(real, gaussian(400, shift=50.0, seed=1), k=5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    # fakes from one corner of the real cloud: precise, but they cover little of it
    real2 = gaussian(600, d=2, seed=2)
    corner = real2[real2[:, 0] > 1.0]
    part = prdc(real2, corner, k=5)
    assert part["precision"] == 1.0 and part["coverage"] < 0.35 and part["recall"] < 0.5


def test_conditional_accuracy_per_attribute_and_joint():
    requested = np.array([[0, 1], [1, 1], [2, 0], [2, 2]])
    predicted = np.array([[0, 1], [1, 0], [2, 0], [1, 2]])
    acc = conditional_accuracy(predicted, requested, ["class", "colour"])
    assert acc == {"class": 0.75, "colour": 0.75, "all": 0.5}


def test_intra_class_diversity_catches_mode_collapse():
    classes = np.repeat([0, 1], 100)
    real = gaussian(200, seed=4)
    collapsed = np.where(classes[:, None] == 0, real[0], real)  # class 0: one image repeated
    div_real, div_fake = intra_class_diversity(real, classes), intra_class_diversity(collapsed, classes)
    assert div_fake[0] == pytest.approx(0.0)
    assert div_fake[1] == pytest.approx(div_real[1])
    assert div_real[0] == pytest.approx(np.sqrt(2 * 8), rel=0.15)  # E‖x − y‖ ≈ √(2d) for N(0, I)


def test_memorisation_flags_exact_copies_of_training_images():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (300, 8, 8, 1), dtype=np.uint8)
    test = rng.integers(0, 256, (100, 8, 8, 1), dtype=np.uint8)
    copies = train[:100].copy()
    d_copy, idx = nearest_neighbours(copies, train)
    assert (d_copy == 0).all() and (idx == np.arange(100)).all()
    d_test, _ = nearest_neighbours(test, train)
    assert (d_test > 0.2).all()  # uniform noise images are far apart (RMS in [0, 1] units)
    mem = memorisation(d_copy, d_test)
    assert mem["generated_flagged_share"] == 1.0
    assert mem["real_floor_flagged_share"] == pytest.approx(0.01)
    fresh = memorisation(nearest_neighbours(rng.integers(0, 256, (100, 8, 8, 1), dtype=np.uint8), train)[0], d_test)
    assert fresh["generated_flagged_share"] < 0.1


def test_nearest_neighbours_matches_brute_force_across_chunks():
    rng = np.random.default_rng(1)
    q, ref = rng.normal(size=(20, 5)), rng.normal(size=(50, 5))
    d, idx = nearest_neighbours(q, ref, chunk=7)
    full = np.linalg.norm(q[:, None] - ref[None], axis=2)
    assert (idx == full.argmin(axis=1)).all()
    np.testing.assert_allclose(d, full.min(axis=1), rtol=1e-6)


class CopyingGenerator(torch.nn.Module):
    """A 'generator' that returns a training image of the requested class: perfect quality, pure memorisation."""

    def __init__(self, images: np.ndarray, codes: np.ndarray) -> None:
        super().__init__()
        self.config = type("C", (), {"z_dim": 2, "image_size": images.shape[1], "channels": images.shape[3]})
        self.images = torch.as_tensor(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        self.codes = codes[:, 0]

    def forward(self, z, y):
        rows = []
        for k, c in enumerate(y[:, 0].tolist()):
            options = np.flatnonzero(self.codes == c)
            rows.append(options[int(abs(z[k, 0].item()) * 1000) % len(options)])
        return self.images[rows]


def toy_split(n: int, seed: int):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 3, (n, 1))
    images = rng.integers(0, 60, (n, 16, 16, 1), dtype=np.uint8)
    images[..., 0] += (codes[:, 0] * 80).astype(np.uint8)[:, None, None]  # class sets the brightness
    return images, codes


def test_evaluate_generator_on_a_copying_generator():
    train, train_codes = toy_split(300, 0)
    test, test_codes = toy_split(150, 1)
    cfg = ClassifierConfig(
        attribute_names=("class",), cardinalities=(3,), image_size=32, channels=1, width=4, feature_dim=8
    )
    torch.manual_seed(0)
    net = AttributeClassifier(cfg).eval()
    pad = ((0, 0), (8, 8), (8, 8), (0, 0))
    train, test = np.pad(train, pad), np.pad(test, pad)
    report = evaluate_generator(
        CopyingGenerator(train, train_codes),
        train_images=train,
        train_codes=train_codes,
        test_images=test,
        test_codes=test_codes,
        judge=net,
        feature_net=net,
        attribute_names=["class"],
        samples=100,
        kid_subsets=5,
        kid_subset_size=50,
        show_progress=False,
    )
    m = report["metrics"]
    assert m["memorisation_pixel"]["generated"] == 1.0  # every image is a training image
    assert m["memorisation_pixel"]["real_floor"] <= 0.02
    for key in ("frechet_distance", "kid", "precision", "recall", "density", "coverage", "accuracy_class"):
        assert "generated" in m[key] and "real_floor" in m[key]
    assert report["samples"] == 100
    assert "standard_fid" in report


def test_generate_images_is_seeded_and_uint8():
    g = CopyingGenerator(*toy_split(30, 0))
    codes = np.array([[0], [1], [2]])
    a, b = generate_images(g, codes, seed=3), generate_images(g, codes, seed=3)
    assert a.dtype == np.uint8 and a.shape == (3, 16, 16, 1)
    assert np.array_equal(a, b)


def test_standard_fid_detection_says_why_when_unavailable(tmp_path):
    path, reason = local_inception_weights(tmp_path)
    assert path is None and reason  # no torchvision here, or no weights in an empty hub folder
