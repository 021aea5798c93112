"""Full-reference image quality as the super-resolution literature reports it: PSNR and SSIM, on Y and on RGB.

- **Y** is the luma of ITU-R BT.601 in studio range, as MATLAB's ``rgb2ycbcr`` computes it
  (Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 for R, G, B in [0, 1]), kept in floating point;
  the papers behind the Set5 anchors (FSRCNN, EDSR) report PSNR and SSIM on it.
- **PSNR** = 10 log₁₀(255² / MSE), over every pixel (and channel, for RGB).
- **SSIM** (Wang et al., IEEE TIP 2004) with its standard settings: an 11×11 Gaussian window of σ 1.5,
  K₁ = 0.01, K₂ = 0.03, L = 255, population statistics (scikit-image's ``structural_similarity`` with
  ``gaussian_weights=True, use_sample_covariance=False``); for RGB, the mean of the three channels' SSIM.
- ``shave`` pixels are cut from every border first: for ×s super-resolution the literature cuts s.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity


def luma(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB → (H, W) float64 BT.601 luma in [16, 235]."""
    rgb = image.astype(np.float64) / 255.0
    return 16.0 + rgb @ np.array([65.481, 128.553, 24.966])


def _pair(reference: np.ndarray, test: np.ndarray, shave: int) -> tuple[np.ndarray, np.ndarray]:
    if reference.shape != test.shape:
        raise ValueError(f"images differ in shape: {reference.shape} and {test.shape}")
    if shave:
        reference, test = reference[shave:-shave, shave:-shave], test[shave:-shave, shave:-shave]
    if min(reference.shape[:2]) < 11:
        raise ValueError(f"images of {reference.shape[:2]} after shaving {shave} px are too small for SSIM (11x11)")
    return reference, test


def psnr(reference: np.ndarray, test: np.ndarray, *, channel: str = "y", shave: int = 0) -> float:
    """PSNR in dB of ``test`` against ``reference`` ((H, W, 3) uint8), on ``channel`` ``y`` or ``rgb``."""
    a, b = _pair(reference, test, shave)
    a, b = (luma(a), luma(b)) if channel == "y" else (a.astype(np.float64), b.astype(np.float64))
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(255.0**2 / mse))


def ssim(reference: np.ndarray, test: np.ndarray, *, channel: str = "y", shave: int = 0) -> float:
    """SSIM of ``test`` against ``reference`` ((H, W, 3) uint8), on ``channel`` ``y`` or ``rgb`` (mean)."""
    a, b = _pair(reference, test, shave)
    options = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False, "data_range": 255.0}
    if channel == "y":
        return float(structural_similarity(luma(a), luma(b), **options))
    return float(structural_similarity(a.astype(np.float64), b.astype(np.float64), channel_axis=2, **options))


def quality(reference: np.ndarray, test: np.ndarray, *, shave: int = 0) -> dict[str, float]:
    """PSNR and SSIM on Y and on RGB: ``psnr_y``, ``ssim_y``, ``psnr_rgb``, ``ssim_rgb``."""
    return {f"{m.__name__}_{c}": m(reference, test, channel=c, shave=shave) for c in ("y", "rgb") for m in (psnr, ssim)}
