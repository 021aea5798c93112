"""PSNR/SSIM on Y and RGB, and the documented degradations: known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from features.degradations import (
    BENCHMARK_DEGRADATIONS,
    crop_to_multiple,
    downscale,
    gaussian_blur,
    gaussian_noise,
    jpeg,
    upscale,
)
from features.image_metrics import luma, psnr, quality, ssim


def _photo(h: int = 48, w: int = 40, seed: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    base = 120 + 60 * np.sin(xx / 5.0)[..., None] * np.cos(yy / 7.0)[..., None] + rng.normal(0, 3, (h, w, 3))
    return np.clip(np.round(base), 0, 255).astype(np.uint8)


def test_luma_is_bt601_studio_range():
    assert luma(np.zeros((1, 1, 3), np.uint8))[0, 0] == pytest.approx(16.0)
    assert luma(np.full((1, 1, 3), 255, np.uint8))[0, 0] == pytest.approx(235.0)


def test_psnr_known_answers():
    a = _photo()
    assert psnr(a, a) == math.inf
    b = np.clip(a.astype(int) + 5, 0, 255).astype(np.uint8)  # every value +5: MSE 25 on RGB
    assert psnr(a, b, channel="rgb") == pytest.approx(10 * math.log10(255**2 / 25), abs=1e-9)
    # on Y a +5 step on R, G and B moves luma by 5·(65.481+128.553+24.966)/255 = 4.294...
    assert psnr(a, b, channel="y") == pytest.approx(10 * math.log10(255**2 / (5 * 219 / 255) ** 2), abs=1e-6)


def test_ssim_is_one_for_equal_images_and_falls_with_noise_and_shave_cuts_borders():
    a = _photo()
    assert ssim(a, a) == pytest.approx(1.0)
    noisy = gaussian_noise(a, 20.0, np.random.default_rng(0))
    assert ssim(a, noisy) < 0.9 and ssim(a, noisy, channel="rgb") < 0.9
    bad_border = a.copy()
    bad_border[:2] = 0
    assert psnr(a, bad_border, shave=2) == math.inf
    assert set(quality(a, noisy)) == {"psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"}
    with pytest.raises(ValueError, match="shape"):
        psnr(a, a[:-1])


def test_downscale_and_upscale_shapes_and_refusals():
    a = _photo(48, 40)
    assert downscale(a, 4).shape == (12, 10, 3)
    assert upscale(downscale(a, 4), 4, "lanczos").shape == a.shape
    with pytest.raises(ValueError, match="crop"):
        downscale(_photo(50, 40), 4)
    assert crop_to_multiple(_photo(50, 41), 4).shape == (48, 40, 3)
    with pytest.raises(ValueError, match="interpolation"):
        upscale(a, 2, "nearest")


def test_degradations_do_what_they_say():
    a = _photo()
    rng = np.random.default_rng(1)
    noise = gaussian_noise(a, 15.0, rng).astype(float) - a
    assert 13.5 < noise.std() < 16.5
    blurred = gaussian_blur(a, 1.0)
    assert abs(blurred.astype(float).mean() - a.mean()) < 1.0  # blur keeps the mean
    assert np.abs(np.diff(blurred.astype(float), axis=1)).mean() < np.abs(np.diff(a.astype(float), axis=1)).mean()
    assert jpeg(a, 20).shape == a.shape and not np.array_equal(jpeg(a, 20), a)
    for degradation in BENCHMARK_DEGRADATIONS:
        out = degradation(a, np.random.default_rng(0))
        assert out.shape == a.shape and out.dtype == np.uint8 and psnr(a, out) < 45
