"""Does the served generator look like its catalogue? Fréchet distance beside its real-vs-real floor, and a
checkerboard detector, measured on the images serving makes (``Personaliser.generator``, the cascade included).

- **Fréchet distance** (Heusel et al. 2017) on the bundle classifier's image features (the space FAISS grounds
  generated images in; the classifier never saw a generated image): generated images for the conditions of
  one half of the catalogue's images against the other half's real images, beside the **floor**, the first
  half's real images against the same second half. The ratio is what the demo's target reads (≤ 8×).
- **Checkerboard ratio**: the energy of an image at the three Nyquist frequencies (π, π), (π, 0) and (0, π),
  the coefficients that a period-2 artefact of strided up-sampling piles up in (Odena et al., Distill 2016),
  as a share of the image's variance, generated over real. About 1 for a generator without the artefact;
  a checkerboarded one shows several times the real images' energy there.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.evaluation.generator import frechet_distance
from engine.serving.image_ids import stable_seed
from engine.serving.personaliser import Personaliser
from models.pixels import to_float, to_tensor_images, to_uint8

#: The demo store's targets for the generator: judged accuracy per attribute, the Fréchet ratio and the
#: checkerboard ratio (a generator that "looks like its catalogue").
DEMO_TARGETS = {"accuracy_class": 0.95, "accuracy_colour": 0.98, "accuracy_pattern": 0.70}
MAX_FRECHET_RATIO = 8.0
MAX_CHECKERBOARD_RATIO = 1.5


def nyquist_share(images: np.ndarray) -> np.ndarray:
    """(N, H, W, C) uint8 → (N,) energy of each grey image at the Nyquist frequencies, over its variance.

    For a grey image x with mean removed, X(π, π) = Σ x[i, j]·(−1)^(i+j), X(π, 0) = Σ x[i, j]·(−1)^i and
    X(0, π) = Σ x[i, j]·(−1)^j; the share is (|X(π,π)|² + |X(π,0)|² + |X(0,π)|²) / Σ x[i, j]². White noise puts
    about 1 there per frequency (Parseval), a drawing less (its edges, not a pattern), and a period-2 artefact,
    whose pixels all add up in these sums, far more."""
    grey = images.astype(np.float64).mean(axis=-1)  # (N, H, W)
    h, w = grey.shape[1:]
    down = np.broadcast_to(((-1.0) ** np.arange(h))[:, None], (h, w))  # (π, 0): alternates from row to row
    across = np.broadcast_to(((-1.0) ** np.arange(w))[None, :], (h, w))  # (0, π)
    centred = grey - grey.mean(axis=(1, 2), keepdims=True)
    energy = sum(np.einsum("nhw,hw->n", centred, s) ** 2 for s in (down * across, down, across))
    return energy / np.maximum((centred**2).sum(axis=(1, 2)), 1e-9)


@torch.inference_mode()
def _features(personaliser: Personaliser, images: torch.Tensor) -> np.ndarray:  # images: (B, C, H, W) in [-1, 1]
    return personaliser.bundle.classifier.embed(images).numpy()


def fidelity_metrics(
    personaliser: Personaliser,
    images: np.ndarray,  # (N, S, S, 3) uint8 real catalogue images at the served size
    codes: np.ndarray,  # (N, n_attributes) their conditions
    *,
    max_images: int = 1000,
    seed: int = 0,
    batch_size: int = 128,
) -> dict:
    """Fréchet distance of served images against real ones with its floor and ratio, and the checkerboard ratio
    (see the module). Uses at most ``max_images`` real images per half."""
    if len(images) < 4:
        raise ValueError(f"the Fréchet distance needs at least 4 real images; got {len(images)}")
    order = np.random.default_rng(seed).permutation(len(images))
    half = min(len(images) // 2, max_images)
    first, second = order[:half], order[half : 2 * half]
    real_feats: list[np.ndarray] = []
    ref_feats: list[np.ndarray] = []
    gen_feats: list[np.ndarray] = []
    gen_nyquist: list[np.ndarray] = []
    for start in range(0, half, batch_size):
        a, b = first[start : start + batch_size], second[start : start + batch_size]
        real_feats.append(_features(personaliser, to_float(to_tensor_images(images[a]))))
        ref_feats.append(_features(personaliser, to_float(to_tensor_images(images[b]))))
        seeds = [stable_seed("fidelity", seed, int(k)) for k in a]
        generated = personaliser.generator.generate(codes[a], seeds)  # as serving makes them
        gen_feats.append(_features(personaliser, generated))
        gen_nyquist.append(nyquist_share(to_uint8(generated)))
    real, ref, gen = np.concatenate(real_feats), np.concatenate(ref_feats), np.concatenate(gen_feats)
    fd, floor = frechet_distance(gen, ref), frechet_distance(real, ref)
    checker_real = float(nyquist_share(images[first]).mean())
    checker_gen = float(np.concatenate(gen_nyquist).mean())
    return {
        "images_per_half": int(half),
        "frechet_distance": fd,
        "frechet_floor": floor,
        "frechet_ratio": fd / floor if floor > 0 else float("inf"),
        "feature_space": "the bundle classifier's image features (embed)",
        "nyquist_share": {"generated": checker_gen, "real": checker_real},
        "checkerboard_ratio": checker_gen / checker_real if checker_real > 0 else float("inf"),
    }


def demo_targets(generation: dict, fidelity: dict) -> list[dict]:
    """The demo store's generator targets, each with its figure and whether it is met."""
    rows = [
        {"target": f"judged {key.removeprefix('accuracy_')} ≥ {bound:.2f}", "value": generation[key], "bound": bound}
        for key, bound in DEMO_TARGETS.items()
        if key in generation
    ]
    for row in rows:
        row["met"] = row["value"] >= row["bound"]
    for key, name, bound in (
        ("frechet_ratio", "Fréchet distance / real floor", MAX_FRECHET_RATIO),
        ("checkerboard_ratio", "checkerboard ratio", MAX_CHECKERBOARD_RATIO),
    ):
        rows.append({"target": f"{name} ≤ {bound:g}", "value": fidelity[key], "bound": bound})
        rows[-1]["met"] = fidelity[key] <= bound
    return rows
