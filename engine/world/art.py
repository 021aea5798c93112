"""Procedural product drawings for the demo store: eight garment classes, ten colours, four patterns.

Every drawing is a flat-lay product shot on a light grey background: a silhouette filled with the item's
colour (with a few RGB units of per-item jitter), a pattern in a shade of that colour, a dark outline so
that a white item stands out, and a few dark detail lines (seams, buttons, laces). Each class is a
parametric shape (:mod:`engine.world.shapes`) whose parameters (lengths, widths, necklines, handles ...)
and a small scale/offset jitter are drawn from ``rng``, so two items of one class differ while the class
stays recognisable at 64×64.

Shapes are laid out in unit coordinates (x to the right, y down, the canvas is [0, 1]²), rasterised as
hard masks at ``SUPERSAMPLE``× the output size with Pillow, composed with numpy, and averaged down by
``SUPERSAMPLE`` (a box filter): each output pixel gets the exact area-weighted colour of what it covers,
which anti-aliases edges without the bright ringing halo a LANCZOS filter leaves around dark outlines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import MappingProxyType

import numpy as np
from PIL import Image

from engine.world.shapes import DRAWERS, FLIPPABLE, SUPERSAMPLE, Canvas

CLASSES: tuple[str, ...] = ("t-shirt", "dress", "trousers", "skirt", "coat", "sneaker", "handbag", "cap")

#: The ten catalogue colours, in vocabulary order (read-only).
COLOURS: MappingProxyType[str, tuple[int, int, int]] = MappingProxyType(
    {
        "black": (28, 28, 30),
        "white": (252, 252, 250),
        "grey": (128, 128, 128),
        "red": (205, 30, 38),
        "orange": (245, 130, 20),
        "yellow": (245, 212, 35),
        "green": (35, 150, 60),
        "blue": (35, 75, 205),
        "pink": (245, 140, 190),
        "purple": (120, 45, 160),
    }
)

PATTERNS: tuple[str, ...] = ("solid", "stripes", "dots", "check")

OUTLINE_RGB = (38, 38, 42)
_SOLE_RGB = (246, 246, 242)  # sneaker soles are off-white, as most are (light grey on a white sneaker)


def luminance(rgb: Sequence[float]) -> float:
    """Rec. 601 luma in [0, 255]."""
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def pattern_shade(rgb: Sequence[float]) -> np.ndarray:
    """The colour pattern marks are drawn in: darker for light colours, lighter for dark ones."""
    c = np.asarray(rgb, dtype=np.float64)
    if luminance(c) >= 110:
        return c * 0.55
    return c + (255.0 - c) * 0.5


# --- patterns ---------------------------------------------------------------------------------------------


def _pattern_masks(pattern: str, px: int, unit: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(marks, overlap) boolean masks on a px×px grid; ``unit`` is the length of one output pixel at 64×64.

    ``overlap`` marks where the two directions of a check cross (drawn in a deeper shade). Masks are
    built from 1-D profiles by broadcasting, which keeps a drawing to a few milliseconds.
    """
    empty = np.zeros((px, px), dtype=bool)
    if pattern == "solid":
        return empty, empty
    t = np.arange(px, dtype=np.float32)
    if pattern == "stripes":
        period = rng.uniform(5.0, 9.0) * unit
        width = period * rng.uniform(0.3, 0.4)
        phase = rng.uniform(0, period)
        direction = rng.choice(["horizontal", "diagonal", "antidiagonal"], p=[0.55, 0.25, 0.2])
        if direction == "horizontal":
            v = np.broadcast_to(t[:, None], (px, px))
        else:
            v = np.add.outer(t, t if direction == "diagonal" else -t) * math.sqrt(0.5)
        return np.mod(v + phase, period) < width, empty
    if pattern == "dots":
        spacing = rng.uniform(7.0, 9.5) * unit
        radius = spacing * rng.uniform(0.22, 0.27)  # 1.5-2.6 px: marks cover 15-23% of the item
        ox, oy = rng.uniform(0, spacing, size=2)
        staggered = rng.random() < 0.5  # every other row shifted by half a spacing
        dy = np.mod(t + oy, spacing) - spacing / 2
        dx_even = (np.mod(t + ox, spacing) - spacing / 2) ** 2
        dx_odd = (np.mod(t + ox + spacing / 2, spacing) - spacing / 2) ** 2 if staggered else dx_even
        odd = (np.floor((t + oy) / spacing) % 2 == 1)[:, None]
        dx2 = np.where(odd, dx_odd[None, :], dx_even[None, :])
        return dx2 + (dy * dy)[:, None] < radius * radius, empty
    if pattern == "check":
        period = rng.uniform(6.5, 11.0) * unit
        width = period * rng.uniform(0.25, 0.3)
        ox, oy = rng.uniform(0, period, size=2)
        a = (np.mod(t + ox, period) < width)[None, :]
        b = (np.mod(t + oy, period) < width)[:, None]
        return a | b, a & b
    raise ValueError(f"unknown pattern {pattern!r}; expected one of {', '.join(PATTERNS)}")


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation by a (2r+1)² square, separable: r shifts along each axis."""
    out = mask.copy()
    for axis in (0, 1):
        src = out.copy()
        for k in range(1, r + 1):
            if axis == 0:
                out[k:] |= src[:-k]
                out[:-k] |= src[k:]
            else:
                out[:, k:] |= src[:, :-k]
                out[:, :-k] |= src[:, k:]
    return out


# --- the public entry point -------------------------------------------------------------------------------


def draw_item(kind: str, colour: str, pattern: str, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """Draw one product image; returns ``(size, size, 3)`` uint8 RGB.

    ``kind`` is one of :data:`CLASSES`, ``colour`` a key of :data:`COLOURS`, ``pattern`` one of
    :data:`PATTERNS`. Every random choice (shape parameters, jitter, pattern phase) comes from ``rng``,
    so the same generator state gives the same picture.
    """
    if kind not in DRAWERS:
        raise ValueError(f"unknown class {kind!r}; expected one of {', '.join(CLASSES)}")
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}; expected one of {', '.join(COLOURS)}")
    if pattern not in PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}; expected one of {', '.join(PATTERNS)}")
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels; got {size}")

    canvas = Canvas(size, rng, flip=kind in FLIPPABLE and bool(rng.random() < 0.5))
    DRAWERS[kind](canvas, rng)
    body, trim, detail = canvas.mask("body"), canvas.mask("trim"), canvas.mask("detail")
    unit = canvas.px / 64.0
    marks, overlap = _pattern_masks(pattern, canvas.px, unit, rng)

    base = np.asarray(COLOURS[colour], dtype=np.float64)
    fill = np.clip(base + np.clip(np.round(rng.normal(0, 2.0, 3)), -4, 4), 0, 255)
    shade = pattern_shade(fill)
    background = np.clip(rng.uniform(234, 244) + rng.uniform(-1.5, 1.5, 3), 0, 255)
    sole = np.array((200.0, 200.0, 198.0)) if colour == "white" else np.array(_SOLE_RGB, dtype=np.float64)
    detail_rgb = np.array(OUTLINE_RGB, dtype=np.float64) if luminance(fill) > 70 else np.array((120.0,) * 3)

    # Paint by layer index, then look the colours up once: 0 background, 1 outline, 2 fill, 3 pattern,
    # 4 check crossings, 5 sole, 6 detail lines.
    silhouette = body | trim
    labels = _dilate(silhouette, max(2, round(1.25 * unit))).astype(np.uint8)
    labels[body] = 2
    labels[body & marks] = 3
    labels[body & overlap] = 4
    labels[trim & ~body] = 5
    labels[detail & silhouette] = 6
    crossing = np.clip(fill + (shade - fill) * 1.45, 0, 255)
    palette = np.round(np.stack([background, OUTLINE_RGB, fill, shade, crossing, sole, detail_rgb])).astype(np.uint8)
    img = Image.fromarray(labels)  # "L"; putpalette turns it into "P"
    img.putpalette(palette.tobytes())
    out = img.convert("RGB").reduce(SUPERSAMPLE)  # box filter: exact area coverage, no ringing halo
    return np.asarray(out, dtype=np.uint8)
