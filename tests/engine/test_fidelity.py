"""Fréchet distance beside its real floor, and the checkerboard detector, on known answers."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from engine.evaluation.fidelity import demo_targets, fidelity_metrics, nyquist_share
from features.degradations import upscale
from models.pixels import to_float, to_tensor_images


def drawings(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Smooth 32 px images of one of 4 colours (the condition), each a blurred random layout."""
    rng = np.random.default_rng(seed)
    palette = np.array([[200, 40, 40], [40, 180, 60], [50, 60, 210], [230, 200, 40]])
    codes = rng.integers(0, 4, (n, 1))
    small = np.where(rng.random((n, 8, 8, 1)) < 0.5, palette[codes[:, 0]][:, None, None, :], 240)
    images = np.stack([upscale(im.astype(np.uint8), 4) for im in small])
    return images, codes


class Features(torch.nn.Module):
    """A fixed random projection of 4×4-pooled pixels: enough of a feature space for known answers."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.randn(3 * 8 * 8, 16, generator=torch.Generator().manual_seed(0))

    def embed(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, 32, 32) in [-1, 1]
        return torch.nn.functional.avg_pool2d(x, 4).flatten(1) @ self.proj


def served(make) -> SimpleNamespace:
    """A stand-in for the Personaliser: its generator makes ``make(codes, seeds)`` (uint8 images)."""
    generator = SimpleNamespace(generate=lambda codes, seeds: to_float(to_tensor_images(make(codes, seeds))))
    return SimpleNamespace(generator=generator, bundle=SimpleNamespace(classifier=Features()))


def test_a_checkerboard_has_its_energy_at_the_nyquist_frequencies():
    images, _ = drawings(8)
    checker = images.astype(np.int16) + np.where(np.indices((32, 32)).sum(0) % 2 == 0, 12, -12)[None, :, :, None]
    noise = np.random.default_rng(1).integers(0, 256, (8, 32, 32, 3)).astype(np.uint8)
    smooth, boarded = nyquist_share(images).mean(), nyquist_share(checker.clip(0, 255).astype(np.uint8)).mean()
    assert boarded > 20 * smooth
    assert nyquist_share(noise).mean() == pytest.approx(3.0, abs=1.5)  # white noise: about 1 at each of the three


def test_a_generator_that_draws_like_the_catalogue_sits_near_the_floor():
    images, codes = drawings(400)
    others, _ = drawings(400, seed=5)  # new drawings of the same kind, for the conditions asked
    fid = fidelity_metrics(served(lambda c, s: others[: len(c)]), images, codes, max_images=200)
    assert fid["frechet_floor"] > 0 and fid["frechet_ratio"] < 3
    assert fid["checkerboard_ratio"] == pytest.approx(1.0, abs=0.5)


def test_a_generator_of_grey_squares_is_far_from_the_floor():
    images, codes = drawings(400)
    grey = np.full((400, 32, 32, 3), 128, dtype=np.uint8)
    fid = fidelity_metrics(served(lambda c, s: grey[: len(c)]), images, codes, max_images=200)
    assert fid["frechet_ratio"] > 8


def test_demo_targets_pass_and_miss_by_their_bounds():
    generation = {"accuracy_class": 0.96, "accuracy_colour": 0.97, "accuracy_pattern": 0.70}
    rows = demo_targets(generation, {"frechet_ratio": 8.5, "checkerboard_ratio": 1.2})
    assert [r["met"] for r in rows] == [True, False, True, False, True]
