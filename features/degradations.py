"""Documented image degradations and classical resampling, on (H, W, 3) uint8 arrays.

Super-resolution pairs follow the SR literature's protocol: the low-resolution image is the high-resolution
one, cropped to a multiple of the scale, reduced by bicubic interpolation with anti-aliasing (Pillow's BICUBIC
reduction widens the kernel by the scale, as MATLAB's ``imresize`` does). Restoration pairs degrade a clean
photo by Gaussian blur (σ in pixels), additive white Gaussian noise (σ in 8-bit units, e.g. 15 = σ 15/255) and
JPEG compression (Pillow's encoder at a quality, its default 4:2:0 chroma subsampling), in that order when
several are applied, as a camera and a web upload would.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

RESAMPLERS = {"bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}


def _check(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image; got {image.shape} {image.dtype}")


def crop_to_multiple(image: np.ndarray, scale: int) -> np.ndarray:
    """The top-left part of ``image`` whose sides are multiples of ``scale``."""
    h, w = image.shape[0] - image.shape[0] % scale, image.shape[1] - image.shape[1] % scale
    return image[:h, :w]


def downscale(image: np.ndarray, scale: int) -> np.ndarray:
    """(H, W, 3) → (H/scale, W/scale, 3) by anti-aliased bicubic reduction; H and W must divide by ``scale``."""
    _check(image)
    h, w = image.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f"a {w}x{h} image cannot be reduced by {scale}; crop it first (crop_to_multiple)")
    return np.asarray(Image.fromarray(image).resize((w // scale, h // scale), Image.Resampling.BICUBIC))


def upscale(image: np.ndarray, scale: int, method: str = "bicubic") -> np.ndarray:
    """(h, w, 3) → (scale·h, scale·w, 3) by a classical interpolation: ``bicubic`` or ``lanczos`` (Pillow)."""
    _check(image)
    if method not in RESAMPLERS:
        raise ValueError(f"unknown interpolation {method!r}; choose one of {sorted(RESAMPLERS)}")
    h, w = image.shape[:2]
    return np.asarray(Image.fromarray(image).resize((w * scale, h * scale), RESAMPLERS[method]))


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Blur by a Gaussian of standard deviation ``sigma`` pixels (truncated at 4σ, mirrored borders)."""
    _check(image)
    if sigma <= 0:
        return image.copy()
    out = ndimage.gaussian_filter(image.astype(np.float32), sigma=(sigma, sigma, 0), mode="reflect", truncate=4.0)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def gaussian_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add white Gaussian noise of standard deviation ``sigma`` in 8-bit units; clipped and rounded."""
    _check(image)
    noisy = image.astype(np.float32) + rng.normal(0.0, sigma, size=image.shape).astype(np.float32)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode as JPEG at ``quality`` (1-95) with Pillow's defaults and decode again."""
    _check(image)
    if not 1 <= quality <= 95:
        raise ValueError(f"JPEG quality must be 1..95; got {quality}")
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as decoded:
        return np.asarray(decoded.convert("RGB"))


@dataclass(frozen=True, kw_only=True)
class Degradation:
    """One documented degradation: blur σ (pixels), then noise σ (8-bit units), then JPEG quality (0: none)."""

    name: str
    blur: float = 0.0
    noise: float = 0.0
    jpeg_quality: int = 0

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = gaussian_blur(image, self.blur) if self.blur > 0 else image
        out = gaussian_noise(out, self.noise, rng) if self.noise > 0 else out
        return jpeg(out, self.jpeg_quality) if self.jpeg_quality else out


#: The degradations restoration is measured on, one at a time (docs/results).
BENCHMARK_DEGRADATIONS: tuple[Degradation, ...] = (
    Degradation(name="noise σ=15", noise=15.0),
    Degradation(name="JPEG q=20", jpeg_quality=20),
    Degradation(name="blur σ=1", blur=1.0),
)
