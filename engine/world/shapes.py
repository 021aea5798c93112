"""The eight product shapes of the demo store's drawings, on a supersampled unit-coordinate canvas.

Each class is a parametric shape whose parameters (lengths, widths, necklines, handles ...) are drawn from
``rng``, so two items of one class differ while the class stays recognisable at 64×64. A shape is laid
out in unit coordinates (x to the right, y down, the canvas is [0, 1]²) on three hard masks at
``SUPERSAMPLE``× the output size: the body (filled with the item's colour and pattern), the trim (neutral
parts such as a sneaker's sole) and the detail lines (seams, buttons, laces). :func:`engine.world.art.draw_item`
colours the masks and averages them down.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import numpy as np
from PIL import Image, ImageDraw

SUPERSAMPLE = 3

Point = tuple[float, float]


class Canvas:
    """Unit-coordinate drawing on three supersampled masks: body, trim (neutral parts) and detail lines.

    A small scale/offset jitter and an optional horizontal flip are applied to every coordinate.
    """

    def __init__(self, size: int, rng: np.random.Generator, *, flip: bool = False) -> None:
        self.px = size * SUPERSAMPLE
        self.scale = rng.uniform(0.9, 1.0)
        self.dx, self.dy = rng.uniform(-0.035, 0.035, size=2)
        self.flip = flip
        self.line_px = max(2, round(self.px / 64))  # ≈1 output pixel at 64×64
        self.layers = {name: Image.new("L", (self.px, self.px), 0) for name in ("body", "trim", "detail")}
        self.draws = {name: ImageDraw.Draw(im) for name, im in self.layers.items()}

    def xy(self, p: Point) -> tuple[float, float]:
        x, y = p
        if self.flip:
            x = 1.0 - x
        x = 0.5 + (x - 0.5) * self.scale + self.dx
        y = 0.5 + (y - 0.5) * self.scale + self.dy
        return x * self.px, y * self.px

    def box(self, x0: float, y0: float, x1: float, y1: float) -> list[float]:
        (a, b), (c, d) = self.xy((x0, y0)), self.xy((x1, y1))
        return [min(a, c), min(b, d), max(a, c), max(b, d)]

    def polygon(self, points: Sequence[Point], layer: str = "body", value: int = 255) -> None:
        self.draws[layer].polygon([self.xy(p) for p in points], fill=value)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, layer: str = "body", value: int = 255) -> None:
        self.draws[layer].ellipse(self.box(cx - rx, cy - ry, cx + rx, cy + ry), fill=value)

    def line(self, points: Sequence[Point], layer: str = "detail", width: float = 1.0) -> None:
        w = max(1, round(self.line_px * width))
        self.draws[layer].line([self.xy(p) for p in points], fill=255, width=w, joint="curve")

    def thick_line(self, points: Sequence[Point], width: float, layer: str = "body") -> None:
        """A stroke ``width`` unit-lengths wide (a handle, a strap), with round joints and caps."""
        w = max(1, round(width * self.px * self.scale))
        pts = [self.xy(p) for p in points]
        self.draws[layer].line(pts, fill=255, width=w, joint="curve")
        for x, y in (pts[0], pts[-1]):
            self.draws[layer].ellipse([x - w / 2, y - w / 2, x + w / 2, y + w / 2], fill=255)

    def mask(self, layer: str) -> np.ndarray:
        return np.asarray(self.layers[layer]) > 127


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 16) -> list[Point]:
    """Points on an elliptic arc from angle a0 to a1 (degrees; 0 = +x, 90 = +y i.e. down)."""
    t = np.radians(np.linspace(a0, a1, n))
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in t]


def _hem(x_left: float, x_right: float, y: float, sag: float, n: int = 9) -> list[Point]:
    """A hem from right to left that sags by ``sag`` in the middle (a flared garment's curved bottom)."""
    xs = np.linspace(x_right, x_left, n)
    mid, half = (x_left + x_right) / 2, (x_right - x_left) / 2
    return [(float(x), y + sag * (1 - ((x - mid) / half) ** 2)) for x in xs]


def _mirror(points: Sequence[Point], cx: float = 0.5) -> list[Point]:
    return [(2 * cx - x, y) for x, y in reversed(points)]


def _bezier(p0: Point, p1: Point, p2: Point, n: int = 8) -> list[Point]:
    """Points on the quadratic Bézier curve from p0 to p2 with control point p1."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    pts = (1 - t) ** 2 * np.array(p0) + 2 * (1 - t) * t * np.array(p1) + t**2 * np.array(p2)
    return [(float(x), float(y)) for x, y in pts]


# --- the eight classes ------------------------------------------------------------------------------------


def _tshirt(c: Canvas, rng: np.random.Generator) -> None:
    top = rng.uniform(0.15, 0.21)
    bw = rng.uniform(0.17, 0.22)  # body half-width
    hem = rng.uniform(0.80, 0.88)
    hw = bw + rng.uniform(-0.01, 0.02)
    nw = rng.uniform(0.06, 0.09)  # neckline half-width
    nd = rng.uniform(0.035, 0.075)  # neckline depth
    sa = math.radians(rng.uniform(20, 40))  # sleeve angle below horizontal
    sl = rng.uniform(0.11, 0.18)  # sleeve length
    sw = rng.uniform(0.09, 0.12)  # sleeve opening
    shoulder = (0.5 - bw - 0.02, top + 0.03)
    end_top = (shoulder[0] - sl * math.cos(sa), shoulder[1] + sl * math.sin(sa))
    end_bot = (end_top[0] + sw * math.sin(sa), end_top[1] + sw * math.cos(sa))
    armpit = (0.5 - bw, end_bot[1] + 0.03)
    left = [(0.5 - nw, top), shoulder, end_top, end_bot, armpit, (0.5 - hw, hem)]
    c.polygon(left + _mirror(left))
    if rng.random() < 0.3:  # V neck
        c.polygon([(0.5 - nw, top - 0.02), (0.5 + nw, top - 0.02), (0.5, top + nd * 1.8)], value=0)
    else:
        c.ellipse(0.5, top, nw, nd, value=0)
        rib = 0.022
        c.line(_arc(0.5, top, nw + rib, nd + rib, 0, 180), width=0.8)
    for side in (1, -1):  # sleeve hems
        a, b = end_top, end_bot
        inward = (math.cos(sa) * 0.03, -math.sin(sa) * 0.03)
        pts = [(a[0] + inward[0], a[1] + inward[1]), (b[0] + inward[0], b[1] + inward[1])]
        if side == -1:
            pts = _mirror(pts)
        c.line(pts, width=0.8)


def _dress(c: Canvas, rng: np.random.Generator) -> None:
    top = rng.uniform(0.17, 0.23)  # bodice top
    bw = rng.uniform(0.10, 0.14)
    waist = top + rng.uniform(0.16, 0.22)
    ww = rng.uniform(0.08, 0.105)
    hem = rng.uniform(0.80, 0.93)
    hw = ww + rng.uniform(0.09, 0.24)  # flare
    sag = rng.uniform(0.0, 0.035)
    strap = rng.uniform(0.02, 0.07)  # strap width: spaghetti straps to tank shoulders
    strap_top = top - rng.uniform(0.08, 0.11)
    left = [(0.5 - bw, top), (0.5 - ww, waist), (0.5 - hw, hem)]
    c.polygon([*left, *_hem(0.5 - hw, 0.5 + hw, hem, sag)[::-1], (0.5 + ww, waist), (0.5 + bw, top)])
    for s in (-1, 1):
        outer = 0.5 + s * (bw - 0.005)
        inner = outer - s * strap
        shift = s * 0.02  # straps lean inwards towards the neck
        c.polygon([(outer, top + 0.01), (inner, top + 0.01), (inner - shift, strap_top), (outer - shift, strap_top)])
    c.ellipse(0.5, top, max(0.02, bw - strap - 0.01), rng.uniform(0.015, 0.06), value=0)  # neckline
    c.line([(0.5 - ww, waist), (0.5 + ww, waist)], width=0.9)
    if rng.random() < 0.35:  # a belt
        c.line([(0.5 - ww, waist + 0.03), (0.5 + ww, waist + 0.03)], width=0.9)
    for k in range(int(rng.integers(0, 3))):  # folds of the skirt
        f = (k + 1) / 3 * rng.choice([-1, 1]) * 0.8
        c.line([(0.5 + f * ww, waist + 0.05), (0.5 + f * hw, hem - 0.01)], width=0.6)


def _trousers(c: Canvas, rng: np.random.Generator) -> None:
    top = rng.uniform(0.08, 0.14)
    ww = rng.uniform(0.14, 0.18)
    crotch = top + rng.uniform(0.22, 0.28)
    hem = rng.uniform(0.82, 0.93)
    flare = rng.uniform(-0.025, 0.05)  # outer hem offset beyond the waist: tapered to flared
    leg = rng.uniform(0.10, 0.15)  # leg width at the hem
    outer = ww + flare
    inner = max(outer - leg, 0.02)
    hip = (0.5 - ww - 0.012, top + 0.12)
    left = [(0.5 - ww, top), hip, (0.5 - outer, hem), (0.5 - inner, hem), (0.5, crotch)]
    c.polygon(left + _mirror(left[:-1]))
    band = top + 0.04
    c.line([(0.5 - ww, band), (0.5 + ww, band)], width=0.9)
    c.line([(0.5, band), (0.5, crotch - 0.06)], width=0.7)  # fly
    if rng.random() < 0.6:  # slanted pockets
        for s in (-1, 1):
            c.line([(0.5 + s * (ww - 0.08), band), (0.5 + s * (ww - 0.005), band + 0.09)], width=0.7)
    if rng.random() < 0.5:  # creases
        for s in (-1, 1):
            x = 0.5 + s * (ww + (outer - ww) / 2 + inner) / 2
            c.line([(x, crotch), (x, hem - 0.03)], width=0.5)


def _skirt(c: Canvas, rng: np.random.Generator) -> None:
    length = rng.uniform(0.36, 0.52)
    top = 0.48 - length / 2 + rng.uniform(-0.03, 0.03)
    ww = rng.uniform(0.14, 0.18)
    hem = top + length
    hw = ww + rng.uniform(0.02, 0.19)  # flare
    sag = rng.uniform(0.0, 0.03)
    c.polygon([(0.5 - ww, top), (0.5 - hw, hem), *_hem(0.5 - hw, 0.5 + hw, hem, sag)[::-1], (0.5 + ww, top)])
    band = top + 0.045
    c.line([(0.5 - ww, band), (0.5 + ww, band)], width=0.9)
    if rng.random() < 0.5:
        c.ellipse(0.5 + ww * 0.6, top + 0.022, 0.014, 0.014, layer="detail")  # waistband button
    if hw - ww > 0.08 and rng.random() < 0.6:  # pleats
        n = int(rng.integers(2, 5))
        for f in np.linspace(-0.7, 0.7, n):
            c.line([(0.5 + f * ww, band + 0.01), (0.5 + f * hw, hem + sag * (1 - f * f) - 0.01)], width=0.6)


def _coat(c: Canvas, rng: np.random.Generator) -> None:
    top = rng.uniform(0.10, 0.15)
    bw = rng.uniform(0.16, 0.20)
    hem = rng.uniform(0.80, 0.93)
    hw = bw + rng.uniform(0.0, 0.05)
    nw = rng.uniform(0.05, 0.07)
    sa = math.radians(rng.uniform(62, 78))
    sw = rng.uniform(0.08, 0.11)
    shoulder = (0.5 - bw - 0.03, top + 0.03)
    reach = 0.44 - (bw + 0.03)  # keep the sleeves on the canvas
    sl = min(rng.uniform(0.42, 0.55), reach / math.cos(sa))
    cuff_out = (shoulder[0] - sl * math.cos(sa), shoulder[1] + sl * math.sin(sa))
    cuff_in = (cuff_out[0] + sw * math.sin(sa), cuff_out[1] + sw * math.cos(sa))
    armpit = (0.5 - bw, top + 0.17)
    left = [(0.5 - nw, top), shoulder, cuff_out, cuff_in, armpit, (0.5 - hw, hem)]
    c.polygon(left + _mirror(left))
    collar = rng.choice(["lapel", "stand", "round"])
    if collar == "lapel":
        depth = top + rng.uniform(0.14, 0.24)
        c.polygon([(0.5 - nw, top - 0.02), (0.5 + nw, top - 0.02), (0.5, depth)], value=0)
        for s in (-1, 1):
            c.line([(0.5 + s * nw, top), (0.5 + s * (nw + 0.05), top + 0.08), (0.5, depth)], width=0.8)
    else:
        depth = top + 0.05
        if collar == "stand":
            c.polygon(
                [
                    (0.5 - nw - 0.015, top + 0.01),
                    (0.5 - nw, top - 0.05),
                    (0.5 + nw, top - 0.05),
                    (0.5 + nw + 0.015, top + 0.01),
                ]
            )
            c.line([(0.5 - nw - 0.01, top + 0.005), (0.5 + nw + 0.01, top + 0.005)], width=0.8)
        c.ellipse(0.5, top - 0.01, nw * 0.8, 0.03 if collar == "round" else 0.02, value=0)
    c.line([(0.5, depth), (0.5, hem - 0.005)], width=0.8)  # front edge
    n = int(rng.integers(2, 6))
    columns = (-0.045, 0.045) if rng.random() < 0.3 else (0.025,)
    for y in np.linspace(depth + 0.04, min(hem - 0.08, depth + 0.05 + 0.09 * n), n):
        for x in columns:
            c.ellipse(0.5 + x, float(y), 0.017, 0.017, layer="detail")
    if rng.random() < 0.3:  # belt
        y = top + rng.uniform(0.30, 0.36)
        c.line([(0.5 - bw - 0.005, y), (0.5 + bw + 0.005, y)], width=0.9)
        c.line([(0.5 - bw - 0.005, y + 0.035), (0.5 + bw + 0.005, y + 0.035)], width=0.9)
    if rng.random() < 0.6:  # pockets
        y = top + rng.uniform(0.42, 0.5)
        for s in (-1, 1):
            c.line([(0.5 + s * (bw - 0.11), y), (0.5 + s * (bw - 0.02), y - 0.015)], width=0.8)


def _sneaker(c: Canvas, rng: np.random.Generator) -> None:
    x0, x1 = rng.uniform(0.08, 0.13), rng.uniform(0.87, 0.92)  # heel and toe ends
    bottom = rng.uniform(0.70, 0.76)
    sole = rng.uniform(0.045, 0.09)  # sole thickness
    ys = bottom - sole
    high = rng.random() < 0.2
    hh = rng.uniform(0.36, 0.44) if high else rng.uniform(0.22, 0.30)  # ankle height above the sole
    toe_h = rng.uniform(0.09, 0.15)
    toe_r = rng.uniform(0.05, 0.10)  # toe roundness
    tongue = rng.uniform(0.42, 0.50) if not high else rng.uniform(0.36, 0.42)
    heel_top = (x0 + 0.03, ys - hh * 0.9)
    collar = (tongue - 0.07, ys - hh * (0.92 if high else 0.74))
    tongue_top = (tongue, ys - hh * 1.0)
    toe_top = (x1 - toe_r, ys - toe_h)
    upper = [
        *_bezier((x0 + 0.03, ys + 0.005), (x0 - 0.02, ys - hh * 0.45), heel_top, 6),  # heel counter
        *_bezier(heel_top, (collar[0] - 0.06, collar[1] + 0.01), collar, 6)[1:],  # collar
        *_bezier(collar, (tongue - 0.04, tongue_top[1] - 0.01), (tongue + 0.02, tongue_top[1] + 0.01), 5)[1:],
        *_bezier((tongue + 0.04, tongue_top[1] + 0.03), (tongue + 0.1, toe_top[1]), toe_top, 8),  # vamp
        *_arc(x1 - toe_r, ys - toe_h + toe_r, toe_r, toe_r, 270, 360, 8)[1:],  # toe
        (x1, ys + 0.005),
    ]
    c.polygon(upper)
    c.draws["trim"].rounded_rectangle(c.box(x0 - 0.005, ys, x1 + 0.01, bottom), radius=sole * c.px * 0.45, fill=255)
    c.line([(x0, ys), (x1 + 0.005, ys)], width=0.8)
    if rng.random() < 0.8:  # laces, or a slip-on
        a, b = (tongue + 0.035, tongue_top[1] + 0.04), (toe_top[0] - 0.03, toe_top[1] + 0.005)
        for t in np.linspace(0.0, 0.8, int(rng.integers(3, 6))):
            px, py = a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t
            c.line([(px - 0.025, py - 0.005), (px + 0.01, py + 0.045)], width=0.8)
    if rng.random() < 0.6:  # toe cap
        c.line(_arc(x1 - toe_r, ys, toe_r + 0.05, toe_h * 0.75, 200, 270, 8), width=0.7)
    if rng.random() < 0.5:  # side stripe
        c.line([(x0 + 0.10, ys - 0.02), (tongue - 0.02, ys - hh * 0.55), (tongue + 0.08, ys - 0.02)], width=0.7)


def _handbag(c: Canvas, rng: np.random.Generator) -> None:
    bottom = rng.uniform(0.80, 0.88)
    h = rng.uniform(0.28, 0.42)
    w = rng.uniform(0.22, 0.32)  # half-width at the bottom
    taper = rng.uniform(0.0, 0.06)
    r = rng.uniform(0.02, 0.06)  # bottom corner radius
    ytop = bottom - h
    body = [
        (0.5 - w + taper, ytop),
        *_arc(0.5 - w + r, bottom - r, r, r, 180, 90, 6),
        *_arc(0.5 + w - r, bottom - r, r, r, 90, 0, 6),
        (0.5 + w - taper, ytop),
    ]
    c.polygon(body)
    handle = rng.choice(["arch", "strap", "square"])
    if handle == "arch":
        hx, hy = rng.uniform(0.10, 0.17), rng.uniform(0.12, 0.2)
        c.thick_line(_arc(0.5, ytop + 0.01, hx, hy, 180, 360, 14), width=rng.uniform(0.025, 0.04))
    elif handle == "strap":
        hx, hy = w - taper - 0.03, rng.uniform(0.2, min(0.3, ytop - 0.04))
        c.thick_line(_arc(0.5, ytop + 0.01, hx, hy, 180, 360, 18), width=0.022)
    else:
        hx, hy = rng.uniform(0.08, 0.14), rng.uniform(0.09, 0.15)
        c.thick_line(
            [(0.5 - hx, ytop + 0.01), (0.5 - hx, ytop - hy), (0.5 + hx, ytop - hy), (0.5 + hx, ytop + 0.01)],
            width=rng.uniform(0.025, 0.035),
        )
    if rng.random() < 0.6:  # flap with a clasp
        fy = ytop + h * rng.uniform(0.3, 0.5)
        pts = [
            (0.5 - w + taper * 0.6, ytop + 0.01),
            (0.5 - w + taper * 0.4, fy - 0.04),
            (0.5, fy),
            (0.5 + w - taper * 0.4, fy - 0.04),
            (0.5 + w - taper * 0.6, ytop + 0.01),
        ]
        c.line(pts, width=0.8)
        c.ellipse(0.5, fy - 0.005, 0.02, 0.02, layer="detail")
    else:  # zip
        c.line([(0.5 - w + taper + 0.03, ytop + 0.04), (0.5 + w - taper - 0.03, ytop + 0.04)], width=0.8)


def _cap(c: Canvas, rng: np.random.Generator) -> None:
    base = rng.uniform(0.60, 0.68)
    xc = rng.uniform(0.40, 0.47)
    rx = rng.uniform(0.21, 0.26)
    ry = rng.uniform(0.18, 0.27)  # crown height
    brim = rng.uniform(0.12, min(0.26, 0.94 - xc - rx))  # brim length
    drop = rng.uniform(0.0, 0.05)
    thick = rng.uniform(0.03, 0.045)
    crown = [*_arc(xc, base, rx, ry, 180, 360, 20), (xc + rx, base + 0.01), (xc - rx, base + 0.03)]
    c.polygon(crown)
    tip = (xc + rx + brim, base + drop)
    c.polygon(
        [
            (xc + rx * 0.4, base - 0.01),
            (tip[0] - 0.03, tip[1] - 0.012),
            tip,
            (tip[0] - 0.02, tip[1] + thick * 0.7),
            (xc + rx * 0.5, base + thick),
        ]
    )
    c.line([(xc + rx * 0.45, base + 0.005), (xc + rx + 0.01, base + 0.01)], width=0.8)  # brim seam
    c.ellipse(xc, base - ry, 0.022, 0.016)  # button
    seams = [(-0.45, 0.45), (0.0,), (-0.5, 0.0, 0.5)][int(rng.integers(3))]
    for f in seams:  # panel seams
        bx = xc + f * rx
        c.line([(xc, base - ry), (xc + f * rx * 0.75, base - ry * 0.6), (bx, base)], width=0.6)
    if rng.random() < 0.5:  # back strap
        c.line([(xc - rx + 0.02, base - 0.005), (xc - rx + 0.09, base - 0.005)], width=0.9)


DRAWERS: Mapping[str, Callable[[Canvas, np.random.Generator], None]] = MappingProxyType(
    {
        "t-shirt": _tshirt,
        "dress": _dress,
        "trousers": _trousers,
        "skirt": _skirt,
        "coat": _coat,
        "sneaker": _sneaker,
        "handbag": _handbag,
        "cap": _cap,
    }
)
FLIPPABLE = frozenset({"sneaker", "cap"})  # side views: the toe / brim points left or right
