"""Served image sizes and photo restoration: the bundle's ``sr/`` nets (``models.sr``) at serving time.

Generated images are made at the generator's native size (64 px) and served larger by super-resolution:
``?size=`` 128 is the ×2 net's output, 256 the ×4 net's (or 2× and 4× the native size for another generator).
A bundle without an ``sr/`` component serves the native size only and refuses a larger one with
:class:`SizeUnavailable` (422, naming the missing component) rather than falling back to bicubic in silence:
a storefront that asks for 256 px should know that it gets 256 px of the network's making or nothing.

Restoration (``/v1/enhance``, ``vitrine enhance``) runs the ×1 net on a merchant's photo: denoising, JPEG
deblocking and mild deblurring, the same size out as in. :func:`enhance_folder` does it for a folder, with a
progress bar and a before/after contact sheet.

The evaluation (``vitrine evaluate sr``) measures the nets through this class, so what it reports is what is
served.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from engine.artifacts.bundle import Bundle, load_bundle
from engine.artifacts.registry import ArtifactRegistry
from models.io import read_json
from models.pixels import to_png
from models.sr import SRComponent, run_net

logger = logging.getLogger(__name__)

#: The largest photo /v1/enhance and ``vitrine enhance`` restore, in pixels (a 1024×1024 photo takes about a
#: second on one CPU thread).
MAX_ENHANCE_PIXELS = 1024 * 1024
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


class SizeUnavailable(ValueError):
    """A size the bundle cannot serve: not one of its sizes, or larger than native without an ``sr/`` component."""


class NotAnImage(ValueError):
    """Bytes that are not an image this service reads, or one too large to restore."""


class Enhancer:
    """Upscales generated images to the served sizes and restores photos with one bundle's ``sr/`` nets."""

    def __init__(self, sr: SRComponent | None, *, native_size: int) -> None:
        self.sr = sr
        self.native_size = native_size

    @classmethod
    def of_bundle(cls, bundle: Bundle) -> Enhancer:
        """The bundle's enhancer, as serving builds it: its ``sr/`` nets and its generator's image size."""
        return cls(bundle.sr, native_size=bundle.generator.config.image_size)

    @property
    def sizes(self) -> tuple[int, ...]:
        """The sizes served: the native one, and 2× and 4× it when the bundle has super-resolution."""
        n = self.native_size
        return (n, 2 * n, 4 * n) if self.sr is not None else (n,)

    def factor(self, size: int | None) -> int:
        """The upscaling factor for ``size`` px (None: native, 1); SizeUnavailable for any other size."""
        if size is None or size == self.native_size:
            return 1
        if size in (2 * self.native_size, 4 * self.native_size) and self.sr is None:
            raise SizeUnavailable(
                f"size {size}: this bundle has no super-resolution component (sr/), so it serves "
                f"{self.native_size} px only; train one with `vitrine train sr` and promote it"
            )
        if size not in self.sizes:
            raise SizeUnavailable(f"size must be one of {', '.join(map(str, self.sizes))}; got {size}")
        return size // self.native_size

    def upscale(self, images: np.ndarray, factor: int) -> np.ndarray:
        """(N, h, w, 3) uint8 → (N, factor·h, factor·w, 3) uint8 by the ×2 or ×4 net (factor 1: unchanged)."""
        if factor == 1:
            return images
        if self.sr is None:
            raise SizeUnavailable("this bundle has no super-resolution component (sr/)")
        return run_net(self.sr.nets[f"x{factor}"], images)

    def restore(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 → the same size, restored by the ×1 net."""
        if self.sr is None:
            raise SizeUnavailable(
                "this bundle has no restoration net (its sr/ component); train one with `vitrine train sr`"
            )
        return run_net(self.sr.nets["restore"], image[None])[0]

    def restore_png(self, data: bytes) -> bytes:
        """An uploaded photo (PNG, JPEG, WebP, ...) restored, as PNG bytes of the same size; NotAnImage for
        bytes that are not a readable image or a photo over :data:`MAX_ENHANCE_PIXELS`."""
        return to_png(self.restore(decode_image(data)))


def load_enhancer(*, artifacts: Path, version: str | None = None, model: Path | None = None) -> tuple[Enhancer, dict]:
    """An enhancer and where it came from: an SR component folder (``model``, as `vitrine train sr --out` writes
    it) or a bundle's (``version`` under ``artifacts``, default the serving one), loaded as serving loads it."""
    if model is not None:
        manifest = read_json(Path(model) / "manifest.json") if (Path(model) / "manifest.json").is_file() else {}
        return Enhancer(SRComponent.load(model), native_size=64), {"model": str(model), "manifest": manifest}
    registry = ArtifactRegistry(artifacts)
    version = version or registry.current()
    if version is None:
        raise ValueError(f"no serving bundle under {artifacts}; pass --version, --model, or train one")
    bundle = load_bundle(registry.path(version))
    if bundle.sr is None:
        raise ValueError(f"bundle {version} has no super-resolution component (sr/); add one with `vitrine train sr`")
    sr_manifest = read_json(bundle.path / "sr" / "manifest.json")
    return Enhancer.of_bundle(bundle), {"bundle": version, "manifest": sr_manifest}


def decode_image(data: bytes, *, max_pixels: int = MAX_ENHANCE_PIXELS) -> np.ndarray:
    """Uploaded bytes as (H, W, 3) uint8 RGB (transparency over white); NotAnImage saying what is wrong."""
    if not data:
        raise NotAnImage("the request body is empty; send the photo's bytes (PNG, JPEG or WebP)")
    try:
        with Image.open(io.BytesIO(data)) as opened:
            w, h = opened.size
            if w * h > max_pixels:
                raise NotAnImage(
                    f"the image is {w}×{h}; at most {max_pixels:,} pixels can be restored, resize it first"
                )
            if min(w, h) < 8:
                raise NotAnImage(f"the image is {w}×{h}; it must be at least 8 pixels on each side")
            rgba = opened.convert("RGBA")
    except NotAnImage:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise NotAnImage(f"the body is not an image this service reads (PNG, JPEG, WebP, BMP, TIFF): {exc}") from exc
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(canvas, rgba).convert("RGB"))


@dataclass(frozen=True, kw_only=True)
class EnhanceResult:
    written: list[Path]  # restored photos, one PNG per readable input
    skipped: list[str]  # "<file>: <why>" for each input that could not be restored
    contact_sheet: Path | None


def contact_sheet(pairs: list[tuple[np.ndarray, np.ndarray]], *, cell: int = 160, columns: int = 3) -> np.ndarray:
    """Before/after pairs side by side, ``columns`` pairs a row, each image fitted into a ``cell`` px square."""
    gap = 4

    def fit(image: np.ndarray) -> Image.Image:
        im = Image.fromarray(image)
        im.thumbnail((cell, cell), Image.Resampling.LANCZOS)
        canvas = Image.new("RGB", (cell, cell), (255, 255, 255))
        canvas.paste(im, ((cell - im.width) // 2, (cell - im.height) // 2))
        return canvas

    columns = max(1, min(columns, len(pairs)))
    rows = (len(pairs) + columns - 1) // columns
    pair_width = 2 * cell + gap
    sheet = Image.new("RGB", (columns * (pair_width + 3 * gap) - 3 * gap, rows * (cell + gap) - gap), (200, 200, 200))
    for k, (before, after) in enumerate(pairs):
        x, y = (k % columns) * (pair_width + 3 * gap), (k // columns) * (cell + gap)
        sheet.paste(fit(before), (x, y))
        sheet.paste(fit(after), (x + cell + gap, y))
    return np.asarray(sheet)


def enhance_folder(
    enhancer: Enhancer,
    in_dir: Path,
    out_dir: Path,
    *,
    sheet_images: int = 12,
    show_progress: bool = True,
) -> EnhanceResult:
    """Restore every photo in ``in_dir`` into ``out_dir`` as ``<name>.png``, with a progress bar, and write
    ``out_dir/contact_sheet.png``: the first ``sheet_images`` photos before and after. A file that cannot be read
    is skipped and reported, not fatal."""
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if not in_dir.is_dir():
        raise FileNotFoundError(f"{in_dir} is not a folder of photos")
    files = sorted(p for p in in_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{in_dir} holds no photos ({', '.join(IMAGE_SUFFIXES)})")
    if out_dir.resolve() == in_dir.resolve():
        raise ValueError("--out must be another folder than --in: restored photos would overwrite the originals")
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    skipped: list[str] = []
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    for path in tqdm(files, desc="enhancing", unit="photo", disable=not show_progress):
        try:
            before = decode_image(path.read_bytes())
        except NotAnImage as exc:
            skipped.append(f"{path.name}: {exc}")
            continue
        with torch.inference_mode():
            after = enhancer.restore(before)
        target = out_dir / f"{path.stem}.png"
        target.write_bytes(to_png(after))
        written.append(target)
        if len(pairs) < sheet_images:
            pairs.append((before, after))
    if skipped:
        logger.warning("%d files skipped (first: %s)", len(skipped), skipped[0])
    sheet = None
    if pairs:
        sheet = out_dir / "contact_sheet.png"
        sheet.write_bytes(to_png(contact_sheet(pairs)))
    return EnhanceResult(written=written, skipped=skipped, contact_sheet=sheet)
