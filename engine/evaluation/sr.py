"""How good the served super-resolution and restoration are: PSNR and SSIM on held-out catalogue images.

Super-resolution (`vitrine evaluate sr`): each held-out image (cropped to a multiple of 4) is the ground truth;
its anti-aliased bicubic reduction by 2 or 4 is upscaled again by bicubic and Lanczos interpolation (Pillow) and by
the served net, and each is scored against the original on Y and on RGB, ``scale`` pixels shaved off every border
(``features.image_metrics``). The Set5 anchors of the literature stand beside the figures, and the goal is a margin
over bicubic at least FSRCNN's on Set5.

Restoration (`vitrine evaluate restore`): each held-out image is degraded in the documented ways
(``features.degradations.BENCHMARK_DEGRADATIONS``: noise σ 15/255, JPEG quality 20, blur σ 1), then restored by
classical filters (3×3 median, unsharp mask, non-local means) and by the served net; the degraded input is the
floor every method should beat.

The nets are reached through ``engine.serving.enhance.Enhancer``, built from the bundle as serving builds it, so
the figures are those of what is served.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.restoration import denoise_nl_means
from tqdm.auto import tqdm

from engine.serving.enhance import Enhancer, load_enhancer
from engine.training.sr_data import dataset_images
from features.degradations import BENCHMARK_DEGRADATIONS, Degradation, crop_to_multiple, downscale, upscale
from features.image_metrics import quality

logger = logging.getLogger(__name__)

METRICS = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")
#: Set5, PSNR on Y (dB), as the papers report them: bicubic and FSRCNN (Dong et al., ECCV 2016), EDSR-baseline
#: (Lim et al., CVPRW 2017).
SET5_ANCHORS = {
    "x2": {"bicubic": 33.66, "FSRCNN": 37.00, "EDSR-baseline": 37.99},
    "x4": {"bicubic": 28.42, "FSRCNN": 30.72, "EDSR-baseline": 32.09},
}
#: The goal: a margin over bicubic (PSNR on Y) at least FSRCNN's on Set5.
GOAL_MARGIN = {"x2": 3.3, "x4": 2.3}


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {m: float(np.mean([r[m] for r in rows])) for m in METRICS}


def evaluate_sr(enhancer: Enhancer, images: list[np.ndarray], *, show_progress: bool = True) -> dict:
    """Bicubic, Lanczos and the served net at ×2 and ×4 on ``images`` (the ground truth); mean metrics each."""
    images = [crop_to_multiple(im, 4) for im in images if min(im.shape[:2]) >= 4 * 12]
    if not images:
        raise ValueError("no image is large enough to evaluate ×4 super-resolution (48 px a side at least)")
    report: dict = {}
    for factor in (2, 4):
        rows: dict[str, list[dict[str, float]]] = {"bicubic": [], "lanczos": [], "sr": []}
        for hr in tqdm(images, desc=f"×{factor}", unit="img", disable=not show_progress):
            lr = downscale(hr, factor)
            outputs = {
                "bicubic": upscale(lr, factor, "bicubic"),
                "lanczos": upscale(lr, factor, "lanczos"),
                "sr": enhancer.upscale(lr[None], factor)[0],
            }
            for name, out in outputs.items():
                rows[name].append(quality(hr, out, shave=factor))
        methods = {name: _mean(r) for name, r in rows.items()}
        margin = {m: methods["sr"][m] - methods["bicubic"][m] for m in METRICS}
        key = f"x{factor}"
        report[key] = {
            "images": len(images),
            "methods": methods,
            "margin_over_bicubic": margin,
            "goal_margin_psnr_y": GOAL_MARGIN[key],
            "goal_met": bool(margin["psnr_y"] >= GOAL_MARGIN[key]),
            "set5_anchors_psnr_y": SET5_ANCHORS[key],
        }
    return report


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def median(image: np.ndarray) -> np.ndarray:
    """3×3 median filter, per channel."""
    return ndimage.median_filter(image, size=(3, 3, 1), mode="reflect")


def unsharp(image: np.ndarray, *, sigma: float = 1.0, amount: float = 1.0) -> np.ndarray:
    """Unsharp mask: x + amount · (x − G_σ ∗ x), a Gaussian of σ 1 px, amount 1, per channel (scikit-image's
    defaults; its own ``unsharp_mask`` returned values of 1e298 on images that span 0-255)."""
    x = image.astype(np.float64)
    blurred = ndimage.gaussian_filter(x, sigma=(sigma, sigma, 0), mode="reflect", truncate=4.0)
    return _to_uint8(x + amount * (x - blurred))


def noise_sigma(image: np.ndarray) -> float:
    """The noise σ of an image in [0, 1], by Immerkær's estimator ("Fast noise variance estimation", CVIU 1996):
    σ = √(π/2) / (6 (W−2)(H−2)) · Σ |I ∗ M|, M the 3×3 mask [1 −2 1; −2 4 −2; 1 −2 1]; mean over channels."""
    mask = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
    h, w = image.shape[:2]
    sums = [np.abs(ndimage.convolve(image[..., c], mask, mode="reflect"))[1:-1, 1:-1].sum() for c in range(3)]
    return float(np.mean(sums) * np.sqrt(np.pi / 2) / (6 * (w - 2) * (h - 2)))


def nlm(image: np.ndarray) -> np.ndarray:
    """Non-local means (Buades et al., CVPR 2005) as scikit-image documents it: 5×5 patches, 13×13 search window,
    h = 0.8 σ, σ estimated from the image (:func:`noise_sigma`)."""
    x = image.astype(np.float64) / 255.0
    sigma = max(noise_sigma(x), 1e-3)
    out = denoise_nl_means(
        x, h=0.8 * sigma, sigma=sigma, patch_size=5, patch_distance=6, fast_mode=True, channel_axis=-1
    )
    return _to_uint8(out * 255.0)


def evaluate_restore(
    enhancer: Enhancer,
    images: list[np.ndarray],
    *,
    degradations: tuple[Degradation, ...] = BENCHMARK_DEGRADATIONS,
    seed: int = 0,
    show_progress: bool = True,
) -> dict:
    """For each degradation: the degraded input, median, unsharp mask, NLM and the served net; mean metrics."""
    images = [im for im in images if min(im.shape[:2]) >= 16]
    if not images:
        raise ValueError("no image is large enough to evaluate restoration (16 px a side at least)")
    methods = {"degraded": lambda im: im, "median": median, "unsharp": unsharp, "nlm": nlm, "network": enhancer.restore}
    report: dict = {}
    for k, degradation in enumerate(degradations):
        rng = np.random.default_rng([seed, k])
        rows: dict[str, list[dict[str, float]]] = {name: [] for name in methods}
        for clean in tqdm(images, desc=degradation.name, unit="img", disable=not show_progress):
            degraded = degradation(clean, rng)
            for name, method in methods.items():
                rows[name].append(quality(clean, method(degraded)))
        means = {name: _mean(r) for name, r in rows.items()}
        best_classical = max(("median", "unsharp", "nlm"), key=lambda n: means[n]["psnr_y"])
        report[degradation.name] = {
            "degradation": {
                "blur": degradation.blur,
                "noise": degradation.noise,
                "jpeg_quality": degradation.jpeg_quality,
            },
            "images": len(images),
            "methods": means,
            "best_classical": best_classical,
            "margin_over_best_classical_psnr_y": means["network"]["psnr_y"] - means[best_classical]["psnr_y"],
            "margin_over_degraded_psnr_y": means["network"]["psnr_y"] - means["degraded"]["psnr_y"],
        }
    return report


def format_sr(report: dict) -> str:
    """The super-resolution tables, one per scale, with the Set5 anchors and the goal."""
    lines = []
    for key in ("x2", "x4"):
        r = report[key]
        anchors = ", ".join(f"{k} {v:.2f}" for k, v in r["set5_anchors_psnr_y"].items())
        lines.append(f"×{key[1:]} on {r['images']} images   (Set5 PSNR-Y anchors: {anchors})")
        lines.append(f"  {'method':<10} {'PSNR-Y':>8} {'SSIM-Y':>8} {'PSNR-RGB':>9} {'SSIM-RGB':>9}")
        for name, m in r["methods"].items():
            lines.append(
                f"  {name:<10} {m['psnr_y']:>8.2f} {m['ssim_y']:>8.4f} {m['psnr_rgb']:>9.2f} {m['ssim_rgb']:>9.4f}"
            )
        margin = r["margin_over_bicubic"]["psnr_y"]
        verdict = "met" if r["goal_met"] else f"missed by {r['goal_margin_psnr_y'] - margin:.2f} dB"
        lines.append(f"  margin over bicubic: {margin:+.2f} dB PSNR-Y (goal +{r['goal_margin_psnr_y']:.1f}: {verdict})")
    return "\n".join(lines)


def format_restore(report: dict) -> str:
    """The restoration tables, one per degradation."""
    lines = []
    for name, r in report.items():
        lines.append(f"{name} on {r['images']} images")
        lines.append(f"  {'method':<10} {'PSNR-Y':>8} {'SSIM-Y':>8} {'PSNR-RGB':>9} {'SSIM-RGB':>9}")
        for method, m in r["methods"].items():
            lines.append(
                f"  {method:<10} {m['psnr_y']:>8.2f} {m['ssim_y']:>8.4f} {m['psnr_rgb']:>9.2f} {m['ssim_rgb']:>9.4f}"
            )
        lines.append(
            f"  network over degraded input: {r['margin_over_degraded_psnr_y']:+.2f} dB; over the best classical "
            f"filter ({r['best_classical']}): {r['margin_over_best_classical_psnr_y']:+.2f} dB PSNR-Y"
        )
    return "\n".join(lines)


def run_evaluation(
    task: str,
    *,
    dataset: str,
    data: Path | None,
    artifacts: Path,
    version: str | None = None,
    model: Path | None = None,
    images: int | None = 200,
    seed: int = 0,
    show_progress: bool = True,
) -> dict:
    """`vitrine evaluate sr|restore`: the served nets (a bundle's, or an SR run's with ``model``) on the held-out
    images of ``dataset``; the report holds the protocol, where the nets came from and how they were trained."""
    if task not in ("sr", "restore"):
        raise ValueError(f"task must be sr or restore; got {task!r}")
    enhancer, source = load_enhancer(artifacts=artifacts, version=version, model=model)
    test = dataset_images(dataset, data, "test", max_images=images, seed=seed, show_progress=show_progress)
    if task == "sr":
        results = evaluate_sr(enhancer, test, show_progress=show_progress)
        protocol = (
            "ground truth: held-out images cropped to a multiple of 4; input: anti-aliased bicubic reduction "
            "(Pillow); bicubic and Lanczos: Pillow; metrics shave `scale` px per border; Y: BT.601 luma"
        )
    else:
        results = evaluate_restore(enhancer, test, seed=seed, show_progress=show_progress)
        protocol = "held-out images degraded one way at a time (features.degradations); no border shaved"
    manifest = source.pop("manifest", {})
    training = {
        "config": (manifest.get("config") or {}).get("training"),
        "seconds": {r: t.get("seconds") for r, t in (manifest.get("training") or {}).items()},
        "steps": {r: t.get("steps") for r, t in (manifest.get("training") or {}).items()},
        "hr_source": manifest.get("hr_source") or manifest.get("dataset"),
    }
    return {
        "task": task,
        "dataset": dataset,
        "data": str(Path(data).resolve()) if data else None,
        "split": "test",
        "seed": seed,
        "protocol": protocol,
        "nets": {**source, "training": training},
        "results": results,
    }
