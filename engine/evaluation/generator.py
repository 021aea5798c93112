"""The generator evaluation harness: sample quality, conditioning, diversity and memorisation, always
measured against held-out real images, with the real-vs-real floor (train split against test split)
beside every figure.

Every figure is computed the same way twice: once for generated images against the real test images,
and once for an equally sized sample of real *training* images against the same test images. The second
is the floor — the best a perfect generator of the training distribution could score at that sample
size — so a figure is read against it, never alone.

Feature space. Inception weights cannot be downloaded here, so Fréchet distance, KID and PRDC use the
penultimate features (``AttributeClassifier.embed``) of a classifier the project trains on the dataset's
real training images. A second classifier, seeded differently and trained on the same real images only,
is the judge of conditional accuracy, so the judge is not the network whose features are compared.
Where torchvision and its Inception v3 weights already lie on the machine, the standard FID is added.

Metrics (each a pure function with a known-answer test):
- Fréchet distance (Heusel et al. 2017): ‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2(Σ_a Σ_b)^½).
- KID (Bińkowski et al. 2018): unbiased MMD² with the kernel k(x, y) = (xᵀy / d + 1)³, mean ± std over subsets.
- Precision, recall, density, coverage (Naeem et al., ICML 2020), k-nearest-neighbour balls, k = 5.
- Conditional accuracy: the share of generated images the judge assigns to the requested value of each attribute.
- Intra-class diversity: mean pairwise feature distance within each class, generated over real test.
- Memorisation: each image's distance to its nearest training image, in pixel space (RMS over pixels in
  [0, 1]) and in feature space, generated against real test; the share of generated images closer to a
  training image than the 1st percentile of the real test images' distances.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import scipy.linalg
import torch
from torch import nn
from tqdm.auto import tqdm

from engine.training.classifier import embed_images, predict
from models.classifier import AttributeClassifier
from models.pixels import to_tensor_images

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- metrics


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray, *, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to (N, d) and (M, d) features (Heusel et al. 2017, eq. 6).

    The matrix square root of Σ_a Σ_b can pick up tiny imaginary parts or fail on singular covariances;
    as in the reference implementation (pytorch-fid), ``eps``·I is added to both when the root is not
    finite, and the real part is kept (an imaginary part larger than 1e-3 is logged, not hidden).
    """
    a, b = np.asarray(feats_a, dtype=np.float64), np.asarray(feats_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError(f"need two (N >= 2, d) feature arrays of the same d; got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = scipy.linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(cov_a)) * eps
        covmean = scipy.linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    if np.iscomplexobj(covmean):
        if np.abs(covmean.imag).max() > 1e-3:
            logger.warning("Fréchet distance: sqrtm has an imaginary part of %.3g", np.abs(covmean.imag).max())
        covmean = covmean.real
    diff = mu_a - mu_b
    value = float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean))
    return max(value, 0.0)  # the closed form can dip a rounding error below zero for identical sets


def kid(
    feats_a: np.ndarray, feats_b: np.ndarray, *, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD² with the cubic polynomial kernel
    k(x, y) = (xᵀy / d + 1)³, averaged over ``subsets`` random subsets of ``subset_size`` from each set.

    Returns (mean, std) over subsets. Unbiased: for two samples of one distribution the mean scatters
    around 0 (it can be negative).
    """
    a, b = np.asarray(feats_a, dtype=np.float64), np.asarray(feats_b, dtype=np.float64)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature widths differ: {a.shape[1]} and {b.shape[1]}")
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    d = a.shape[1]
    rng = np.random.default_rng(seed)
    values = np.empty(subsets)
    for s in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
        values[s] = (
            (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2.0 * kxy.mean()
        )
    return float(values.mean()), float(values.std())


def _cdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (float64 for the small feature sets the metrics use)."""
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def _kth_neighbour_radius(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance of each row to its k-th nearest other row (the row itself is the 0-th)."""
    out = torch.empty(len(x), dtype=x.dtype)
    for s in range(0, len(x), chunk):
        out[s : s + chunk] = _cdist(x[s : s + chunk], x).topk(k + 1, dim=1, largest=False).values[:, k]
    return out


def prdc(real: np.ndarray, fake: np.ndarray, *, k: int = 5, chunk: int = 1024) -> dict[str, float]:
    """Precision, recall, density and coverage (Naeem et al., ICML 2020, eqs. 1–4 and §3).

    Each real (fake) sample owns a ball reaching its k-th nearest real (fake) neighbour.
    precision: share of fakes inside some real ball; recall: share of reals inside some fake ball;
    density: mean number of real balls holding a fake, over k (≈ 1 when fakes are distributed like reals);
    coverage: share of real balls holding at least one fake.
    """
    r = torch.as_tensor(np.asarray(real, dtype=np.float64))
    f = torch.as_tensor(np.asarray(fake, dtype=np.float64))
    if len(r) <= k or len(f) <= k:
        raise ValueError(f"PRDC with k={k} needs more than {k} real and fake samples; got {len(r)} and {len(f)}")
    r_radius = _kth_neighbour_radius(r, k, chunk)
    f_radius = _kth_neighbour_radius(f, k, chunk)
    fake_in_real = torch.zeros(len(f), dtype=torch.float64)  # real balls holding each fake
    recall_hit = torch.zeros(len(r), dtype=torch.bool)
    covered = torch.zeros(len(r), dtype=torch.bool)
    for s in range(0, len(r), chunk):
        d = _cdist(r[s : s + chunk], f)  # (chunk, M)
        inside = d < r_radius[s : s + chunk, None]
        fake_in_real += inside.sum(dim=0)
        recall_hit[s : s + chunk] = (d < f_radius[None, :]).any(dim=1)
        covered[s : s + chunk] = d.min(dim=1).values < r_radius[s : s + chunk]
    return {
        "precision": float((fake_in_real > 0).double().mean()),
        "recall": float(recall_hit.double().mean()),
        "density": float(fake_in_real.mean() / k),
        "coverage": float(covered.double().mean()),
    }


def conditional_accuracy(predicted: np.ndarray, requested: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Per attribute, the share of images judged to show the requested value; ``all`` = every attribute right."""
    predicted, requested = np.asarray(predicted), np.asarray(requested)
    if predicted.shape != requested.shape or predicted.shape[1] != len(names):
        raise ValueError(f"predicted {predicted.shape} and requested {requested.shape} must be (N, {len(names)})")
    out = {name: float((predicted[:, a] == requested[:, a]).mean()) for a, name in enumerate(names)}
    out["all"] = float((predicted == requested).all(axis=1).mean())
    return out


def intra_class_diversity(
    feats: np.ndarray, classes: np.ndarray, *, max_per_class: int = 300, seed: int = 0
) -> dict[int, float]:
    """Mean pairwise feature distance among the images of each class (classes with >= 2 images).

    A generator that collapses to a few modes per class scores far below the real images' own value.
    """
    feats = torch.as_tensor(np.asarray(feats, dtype=np.float64))
    classes = np.asarray(classes)
    rng = np.random.default_rng(seed)
    out: dict[int, float] = {}
    for c in np.unique(classes):
        idx = np.flatnonzero(classes == c)
        if len(idx) < 2:
            continue
        if len(idx) > max_per_class:
            idx = rng.choice(idx, max_per_class, replace=False)
        d = _cdist(feats[idx], feats[idx])
        out[int(c)] = float(d.sum() / (len(idx) * (len(idx) - 1)))
    return out


def nearest_neighbours(
    queries: np.ndarray, reference: np.ndarray, *, chunk: int = 4096, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """(distance, index) of each query's nearest reference row; rows are flattened.

    uint8 images are compared as floats in [0, 1] and the distance is the RMS over pixels (so it reads
    in the same units for 32×32 grey and 64×64 colour). The reference is read in chunks, so a large
    training set is never held in float all at once. The reported distance is recomputed exactly for
    the chosen neighbour, so an exact copy reads 0, not a rounding error.
    """
    scale = 255.0 if np.asarray(queries).dtype == np.uint8 else 1.0
    q = torch.as_tensor(np.asarray(queries).reshape(len(queries), -1)).to(device, torch.float32) / scale
    ref = np.asarray(reference).reshape(len(reference), -1)
    if ref.shape[1] != q.shape[1]:
        raise ValueError(f"queries have {q.shape[1]} values per row but the reference has {ref.shape[1]}")
    best = torch.full((len(q),), float("inf"), device=device)
    best_idx = torch.zeros(len(q), dtype=torch.long, device=device)
    qn = (q * q).sum(dim=1, keepdim=True)
    for s in range(0, len(ref), chunk):
        r = torch.as_tensor(ref[s : s + chunk]).to(device, torch.float32) / scale
        d2 = qn + (r * r).sum(dim=1)[None, :] - 2.0 * q @ r.T
        val, idx = d2.min(dim=1)
        better = val < best
        best = torch.where(better, val, best)
        best_idx = torch.where(better, idx + s, best_idx)
    idx = best_idx.cpu().numpy()
    # recomputed in float64 from the original values, so an exact copy reads exactly 0
    diff = np.asarray(queries).reshape(len(q), -1).astype(np.float64) / scale - ref[idx].astype(np.float64) / scale
    exact = np.sqrt((diff**2).mean(axis=1)) if scale == 255.0 else np.linalg.norm(diff, axis=1)
    return exact, idx


def memorisation(gen_to_train: np.ndarray, test_to_train: np.ndarray, *, percentile: float = 1.0) -> dict[str, float]:
    """Compare nearest-training-image distances of generated images with those of real test images.

    A generator that copies its training images puts many generated images closer to a training image
    than almost any real test image is: ``generated_flagged_share`` counts those below the ``percentile``
    of the real test distances (real test images score ``percentile``/100 by construction: the floor).
    """
    gen, test = np.asarray(gen_to_train, dtype=np.float64), np.asarray(test_to_train, dtype=np.float64)
    threshold = float(np.percentile(test, percentile))
    return {
        "generated_median": float(np.median(gen)),
        "real_test_median": float(np.median(test)),
        "median_ratio": float(np.median(gen) / np.median(test)) if np.median(test) > 0 else float("inf"),
        "threshold": threshold,
        "generated_flagged_share": float((gen <= threshold).mean()),
        "real_floor_flagged_share": float((test <= threshold).mean()),
    }


# ---------------------------------------------------------------------------------------------- images


@torch.no_grad()
def generate_images(
    generator: nn.Module,
    codes: np.ndarray,  # (N, n_attributes) int64
    *,
    seed: int,
    batch_size: int = 256,
    device: str = "cpu",
) -> np.ndarray:
    """(N, S, S, C) uint8 images from any generator called as ``generator(z, y)`` (GAN or VAE decoder).

    Noise is drawn from a ``torch.Generator`` seeded with ``seed``; images are quantised to uint8 like
    the real ones, so both go through exactly the same feature and judge pipeline.
    """
    generator.eval()
    z_dim = generator.config.z_dim
    rng = torch.Generator().manual_seed(seed)
    out = []
    for s in range(0, len(codes), batch_size):
        y = torch.as_tensor(np.asarray(codes[s : s + batch_size], dtype=np.int64)).to(device)
        z = torch.randn(len(y), z_dim, generator=rng).to(device)
        x = generator(z, y)
        out.append(((x.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
    size, channels = generator.config.image_size, generator.config.channels
    return np.concatenate(out) if out else np.empty((0, size, size, channels), dtype=np.uint8)


@torch.no_grad()
def judge_images(judge: AttributeClassifier, images: np.ndarray, *, device: str = "cpu") -> np.ndarray:
    """(N, n_attributes) codes the judge assigns to (N, S, S, C) uint8 images."""
    return np.stack(predict(judge, to_tensor_images(images).to(device)), axis=1)


@torch.no_grad()
def inception_features(net: nn.Module, images: np.ndarray, *, batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """2048-d Inception pool features: uint8 → [0, 1], grey → RGB, bilinear 299×299, ImageNet normalisation."""
    mean = torch.tensor([0.485, 0.456, 0.406], device=device)[None, :, None, None]
    std = torch.tensor([0.229, 0.224, 0.225], device=device)[None, :, None, None]
    data = to_tensor_images(images)
    out = []
    for s in range(0, len(data), batch_size):
        x = data[s : s + batch_size].to(device).float() / 255.0
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        x = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        out.append(net((x - mean) / std).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def standard_fid(
    generated: np.ndarray, test: np.ndarray, train: np.ndarray, *, device: str = "cpu"
) -> dict[str, object]:
    """FID in torchvision's Inception v3 space where its weights are local; otherwise says why not."""
    from models.inception import load_inception, local_inception_weights

    weights, reason = local_inception_weights()
    if weights is None:
        return {"available": False, "reason": f"standard FID: not available ({reason})"}
    net = load_inception(weights, device=device)
    f_test = inception_features(net, test, device=device)
    return {
        "available": True,
        "weights": str(weights),
        "generated": frechet_distance(inception_features(net, generated, device=device), f_test),
        "real_floor": frechet_distance(inception_features(net, train, device=device), f_test),
    }


# ---------------------------------------------------------------------------------------------- harness


def evaluate_generator(
    generator: nn.Module,
    *,
    train_images: np.ndarray,  # (N, S, S, C) uint8: the dataset's real training split
    train_codes: np.ndarray,  # (N, n_attributes) int64
    test_images: np.ndarray,  # (M, S, S, C) uint8: held-out real images
    test_codes: np.ndarray,  # (M, n_attributes) int64
    judge: AttributeClassifier,
    feature_net: AttributeClassifier,
    attribute_names: Sequence[str],
    generator_train_index: np.ndarray | None = None,  # rows of train_images the generator saw (None: all)
    samples: int = 5000,
    memorisation_samples: int = 1000,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    prdc_k: int = 5,
    seed: int = 0,
    device: str = "cpu",
    with_standard_fid: bool = True,
    show_progress: bool = True,
) -> dict:
    """Evaluate a conditional generator against held-out real images; the floor is real train vs real test.

    ``samples`` real test images are drawn (all if fewer); the generator draws one image for each of
    their conditions, so generated and real sets share the joint distribution of attributes. The floor
    uses as many real training images. Returns a JSON-ready dict whose figures each carry
    ``generated`` and ``real_floor``.
    """
    names = list(attribute_names)
    rng = np.random.default_rng(seed)
    n = min(samples, len(test_images), len(train_images))
    if n < max(prdc_k + 1, 2):
        raise ValueError(f"too few real images to evaluate: {len(test_images)} test, {len(train_images)} train")
    test_idx = rng.choice(len(test_images), n, replace=False)
    train_idx = rng.choice(len(train_images), n, replace=False)
    requested = np.asarray(test_codes)[test_idx]
    timings: dict[str, float] = {}
    steps = ["generate", "features", "distances", "accuracy", "diversity", "memorisation"]
    bar = tqdm(total=len(steps), desc="evaluate generator", unit="step", disable=not show_progress)

    def done(name: str, started: float) -> None:
        timings[name] = round(time.perf_counter() - started, 2)
        bar.update(1)
        bar.set_postfix_str(name)

    t = time.perf_counter()
    generated = generate_images(generator, requested, seed=seed, device=device)
    done("generate", t)

    t = time.perf_counter()
    real_test, real_train = test_images[test_idx], train_images[train_idx]
    f_gen = embed_images(feature_net, generated, device=device)
    f_test = embed_images(feature_net, real_test, device=device)
    f_train = embed_images(feature_net, real_train, device=device)
    done("features", t)

    t = time.perf_counter()
    kid_args = {"subsets": kid_subsets, "subset_size": kid_subset_size, "seed": seed}
    kid_gen, kid_floor = kid(f_gen, f_test, **kid_args), kid(f_train, f_test, **kid_args)
    pr_gen, pr_floor = prdc(f_test, f_gen, k=prdc_k), prdc(f_test, f_train, k=prdc_k)
    metrics: dict[str, dict] = {
        "frechet_distance": {
            "generated": frechet_distance(f_gen, f_test),
            "real_floor": frechet_distance(f_train, f_test),
        },
        "kid": {
            "generated": kid_gen[0],
            "real_floor": kid_floor[0],
            "generated_std": kid_gen[1],
            "real_floor_std": kid_floor[1],
        },
    }
    for key in ("precision", "recall", "density", "coverage"):
        metrics[key] = {"generated": pr_gen[key], "real_floor": pr_floor[key]}
    done("distances", t)

    t = time.perf_counter()
    acc_gen = conditional_accuracy(judge_images(judge, generated, device=device), requested, names)
    acc_real = conditional_accuracy(judge_images(judge, real_test, device=device), requested, names)
    for key in [*names, "all"]:
        metrics[f"accuracy_{key}"] = {
            "generated": acc_gen[key],
            "real_floor": acc_real[key],
            "share_of_real": acc_gen[key] / acc_real[key] if acc_real[key] > 0 else float("nan"),
        }
    done("accuracy", t)

    t = time.perf_counter()
    classes = requested[:, 0]
    train_classes = np.asarray(train_codes)[train_idx, 0]
    div_gen = intra_class_diversity(f_gen, classes, seed=seed)
    div_test = intra_class_diversity(f_test, classes, seed=seed)
    div_train = intra_class_diversity(f_train, train_classes, seed=seed)
    shared = sorted(set(div_gen) & set(div_test) & set(div_train))
    ratios_gen = {c: div_gen[c] / div_test[c] for c in shared if div_test[c] > 0}
    ratios_train = {c: div_train[c] / div_test[c] for c in shared if div_test[c] > 0}
    metrics["diversity_ratio"] = {
        "generated": float(np.mean(list(ratios_gen.values()))) if ratios_gen else float("nan"),
        "real_floor": float(np.mean(list(ratios_train.values()))) if ratios_train else float("nan"),
        "generated_min": float(min(ratios_gen.values())) if ratios_gen else float("nan"),
        "per_class": {str(c): {"generated": ratios_gen[c], "real_floor": ratios_train[c]} for c in ratios_gen},
    }
    done("diversity", t)

    t = time.perf_counter()
    ref_idx = np.arange(len(train_images)) if generator_train_index is None else np.asarray(generator_train_index)
    reference = train_images[ref_idx]
    m = min(memorisation_samples, n)
    pix_gen, _ = nearest_neighbours(generated[:m], reference, device=device)
    pix_test, _ = nearest_neighbours(real_test[:m], reference, device=device)
    f_ref = embed_images(feature_net, reference, device=device)
    feat_gen, _ = nearest_neighbours(f_gen[:m], f_ref, device=device)
    feat_test, _ = nearest_neighbours(f_test[:m], f_ref, device=device)
    mem_pixel, mem_feat = memorisation(pix_gen, pix_test), memorisation(feat_gen, feat_test)
    metrics["memorisation_pixel"] = {
        "generated": mem_pixel["generated_flagged_share"],
        "real_floor": mem_pixel["real_floor_flagged_share"],
        **mem_pixel,
    }
    metrics["memorisation_feature"] = {
        "generated": mem_feat["generated_flagged_share"],
        "real_floor": mem_feat["real_floor_flagged_share"],
        **mem_feat,
    }
    done("memorisation", t)
    bar.close()

    report: dict = {
        "samples": n,
        "memorisation_samples": m,
        "memorisation_reference_images": len(reference),
        "seed": seed,
        "kid": {"subsets": kid_subsets, "subset_size": min(kid_subset_size, n)},
        "prdc_k": prdc_k,
        "metrics": metrics,
    }
    if with_standard_fid:
        t = time.perf_counter()
        report["standard_fid"] = standard_fid(generated, real_test, real_train, device=device)
        timings["standard_fid"] = round(time.perf_counter() - t, 2)
    report["timings_seconds"] = timings
    return report
