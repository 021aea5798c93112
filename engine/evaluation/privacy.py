"""``vitrine evaluate privacy``: what differential privacy costs the GAN and the visual preference model.

For each ε (``inf`` = the non-private baseline), on one labelled image collection:

- a conditional GAN whose discriminator trains with DP-SGD at that ε (``engine.training.gan``; one unit is one
  training image), judged on the held-out split as ``vitrine evaluate generator`` judges it: the judge's class
  accuracy on generated images and the Fréchet distance in the feature network's space, each beside its
  real-vs-real floor;
- on a store with shopper logs (the demo store), the visual preference model f trained with user-level DP-SGD
  at that ε (``engine.training.visual``; one unit is one shopper), validated as the bundle validates it: the
  AUC of a withheld interaction against the shopper's untouched items, beside u · v and popularity.

Every private network uses the same architecture as the ε = ∞ row (the GAN's discriminator uses GroupNorm in
every row), so the table shows what the noise and clipping cost, not what the architecture change costs. Each
run stops at its planned ``steps`` or at ``seconds``, whichever comes first; ε is the one spent by the steps that
ran (at most the target).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np

from engine.evaluation.generator import evaluate_generator
from engine.evaluation.generator_runs import encode, load_dataset
from engine.evaluation.generator_study import judges
from engine.recommend.baselines import build_interactions
from engine.training.classifier import embed_images
from engine.training.gan import GANTrainConfig, train_gan
from engine.training.privacy import PrivacyConfig
from engine.training.visual import VisualData, VisualTrainConfig, validate_visual
from features.images import load_images
from features.readers import read_store
from features.weighting import WeightingConfig
from models.classifier import AttributeClassifier
from models.embeddings import EmbeddingConfig
from models.gan import GANConfig
from models.io import write_json

logger = logging.getLogger(__name__)

# Published figures the table is read against (the results page cites them).
ANCHORS = {
    "opacus_mnist": "Opacus MNIST example: 94.6% test accuracy at ε = 1.16 against 98.9% without DP",
    "dp_gan_mnist": "private GANs on MNIST: FID 13.0 at ε = 10 (ICLR 2023)",
}


def _privacy(epsilon: float, **settings) -> PrivacyConfig:
    return PrivacyConfig(target_epsilon=None if math.isinf(epsilon) else epsilon, **settings)


def gan_row(
    ds,
    codes: np.ndarray,
    feature_net: AttributeClassifier,
    judge: AttributeClassifier,
    epsilon: float,
    *,
    steps: int,
    seconds: float | None,
    batch_size: int,
    width: int,
    max_grad_norm: float,
    d_steps: int,
    samples: int,
    seed: int,
    show_progress: bool,
) -> dict:
    """Train one GAN at ``epsilon`` on the training split and judge it on the held-out split."""
    train = ~ds.is_test
    config = GANConfig(
        attribute_names=tuple(ds.attributes),
        cardinalities=tuple(int(c) for c in codes.max(axis=0) + 1),
        arch="dcgan",
        image_size=ds.images.shape[1],
        channels=ds.images.shape[3],
        g_width=width,
        d_width=width,
        d_norm="group",
    )
    loop = GANTrainConfig(
        steps=steps,
        batch_size=batch_size,
        max_seconds=seconds,
        lr_g=4e-4,
        lr_d=4e-4,
        log_every=max(1, steps // 10),
        d_steps=d_steps,
        privacy=_privacy(epsilon, max_grad_norm=max_grad_norm),
    )
    result = train_gan(ds.images[train], codes[train], config, loop, seed=seed, show_progress=show_progress)
    report = evaluate_generator(
        result.generator_ema,
        train_images=ds.images[train],
        train_codes=codes[train],
        test_images=ds.images[~train],
        test_codes=codes[~train],
        judge=judge,
        feature_net=feature_net,
        attribute_names=ds.attributes,
        samples=samples,
        memorisation_samples=min(samples, 500),
        kid_subsets=10,
        seed=seed,
        with_standard_fid=False,
        show_progress=show_progress,
    )
    m = report["metrics"]
    first = ds.attributes[0]
    return {
        "steps": result.steps,
        "planned_steps": steps,
        "seconds": round(result.seconds, 1),
        "stopped_early": result.stopped_early,
        "privacy": result.privacy,
        "class_accuracy": m[f"accuracy_{first}"]["generated"],
        "class_accuracy_real": m[f"accuracy_{first}"]["real_floor"],
        "frechet_distance": m["frechet_distance"]["generated"],
        "frechet_distance_floor": m["frechet_distance"]["real_floor"],
        "coverage": m["coverage"]["generated"],
        "memorisation_pixel": m["memorisation_pixel"]["generated"],
        "last_history": result.history[-1] if result.history else None,
    }


def store_visual_data(data_path: Path, feature_net: AttributeClassifier, item_columns, *, show_progress: bool):
    """The store's catalogue images as the visual model reads them: features of ``feature_net``, matrix columns."""
    store = read_store(data_path)
    cat = store.catalogue[store.catalogue["image"] != ""].reset_index(drop=True)
    if store.image_root is None or cat.empty:
        raise ValueError(f"{data_path}: no catalogue images; the preference model needs them")
    size = feature_net.config.image_size
    images, ok = load_images([store.image_root / p for p in cat["image"]], size, show_progress=show_progress)
    cat = cat[ok].reset_index(drop=True)
    return store, VisualData(
        item_ids=cat["item_id"].to_numpy().astype(str),
        features=embed_images(feature_net, images[ok]).astype(np.float32),
        codes=np.zeros((len(cat), 1), dtype=np.int64),
        matrix_cols=np.asarray(item_columns(cat["item_id"].to_numpy()), dtype=np.int64),
    )


def visual_rows(
    data_path: Path,
    feature_net: AttributeClassifier,
    epsilons: list[float],
    *,
    steps: int,
    batch_size: int,
    max_grad_norm: float,
    seed: int,
    show_progress: bool,
) -> list[dict]:
    """The preference model's validation (AUC, cold-item recall) at every ε, on the store's logs."""
    store = read_store(data_path)
    interactions = build_interactions(store.events, WeightingConfig())
    _, vdata = store_visual_data(data_path, feature_net, interactions.items.transform, show_progress=show_progress)
    rows = []
    for eps in epsilons:
        config = VisualTrainConfig(
            steps=steps, batch_size=batch_size, privacy=_privacy(eps, max_grad_norm=max_grad_norm)
        )
        started = time.perf_counter()
        v = validate_visual(
            vdata, interactions.matrix, EmbeddingConfig(), config, seed=seed, show_progress=show_progress
        )
        rows.append(
            {
                "epsilon_target": eps,
                "privacy": v["privacy"],
                "auc": v["auc"]["visual_encoder"],
                "auc_embeddings": v["auc"]["embeddings"],
                "auc_popularity": v["auc"]["popularity"],
                "cold_recall": v["cold_recall"]["visual_encoder"],
                "cold_recall_condition_popularity": v["cold_recall"]["condition_popularity"],
                "k": v["k"],
                "shoppers": v["auc_users"],
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        logger.info("visual model at ε=%s: AUC %.4f (u·v %.4f)", eps, rows[-1]["auc"], rows[-1]["auc_embeddings"])
    return rows


def evaluate_privacy(
    dataset: str,
    data_path: Path,
    *,
    epsilons: tuple[float, ...] = (1.0, 4.0, 8.0, math.inf),
    steps: int = 600,
    seconds: float | None = None,
    batch_size: int = 64,
    width: int = 32,
    max_grad_norm: float = 1.0,
    d_steps: int = 1,
    samples: int = 2000,
    max_images: int | None = None,
    judges_dir: Path | None = None,
    judge_epochs: int = 2,
    visual_steps: int = 800,
    visual_batch_size: int = 512,
    visual_max_grad_norm: float = 1.0,
    parts: tuple[str, ...] = ("gan", "visual"),
    seed: int = 0,
    out: Path | None = None,
    show_progress: bool = True,
) -> dict:
    """The utility-against-ε table for ``dataset`` (see the module docstring); written to ``out`` as JSON.

    ``parts`` picks the models: "gan", "visual" (stores with logs only) or both."""
    if not epsilons or any(not (e > 0) for e in epsilons):
        raise ValueError(f"epsilons must be positive (inf for the non-private baseline); got {epsilons}")
    if not parts or set(parts) - {"gan", "visual"}:
        raise ValueError(f"parts must be 'gan', 'visual' or both; got {parts}")
    if parts == ("visual",) and dataset not in ("demo", "hm"):
        raise ValueError(f"{dataset} has no shopper logs: the preference model needs a store (demo or hm)")
    started = time.perf_counter()
    ds = load_dataset(dataset, data_path, max_images=max_images, show_progress=show_progress)
    _, codes = encode(ds)
    judges_dir = Path(judges_dir) if judges_dir else Path(out).parent / f"judges-{dataset}" if out else None
    if judges_dir is None:
        raise ValueError("give --judges or --out (the judges are cached beside the report)")
    feature_net, judge, judge_metrics = judges(ds, codes, judges_dir, epochs=judge_epochs, show_progress=show_progress)
    gan = []
    for eps in epsilons if "gan" in parts else ():
        row = gan_row(
            ds,
            codes,
            feature_net,
            judge,
            eps,
            steps=steps,
            seconds=seconds,
            batch_size=batch_size,
            width=width,
            max_grad_norm=max_grad_norm,
            d_steps=d_steps,
            samples=samples,
            seed=seed,
            show_progress=show_progress,
        )
        gan.append({"epsilon_target": eps, **row})
        logger.info(
            "GAN at ε=%s: class accuracy %.3f, Fréchet distance %.2f (%d steps)",
            eps,
            row["class_accuracy"],
            row["frechet_distance"],
            row["steps"],
        )
    report: dict = {
        "dataset": dataset,
        "data": str(data_path),
        "train_images": int((~ds.is_test).sum()),
        "test_images": int(ds.is_test.sum()),
        "delta": PrivacyConfig().delta,
        "settings": {
            "steps": steps,
            "seconds": seconds,
            "batch_size": batch_size,
            "width": width,
            "max_grad_norm": max_grad_norm,
            "d_steps": d_steps,
            "samples": samples,
            "judge_epochs": judge_epochs,
            "seed": seed,
        },
        "judges": judge_metrics,
        "gan": gan,
        "anchors": ANCHORS,
    }
    if dataset in ("demo", "hm") and "visual" in parts:
        report["visual"] = visual_rows(
            data_path,
            feature_net,
            list(epsilons),
            steps=visual_steps,
            batch_size=visual_batch_size,
            max_grad_norm=visual_max_grad_norm,
            seed=seed,
            show_progress=show_progress,
        )
        report["settings"].update(
            visual_steps=visual_steps, visual_batch_size=visual_batch_size, visual_max_grad_norm=visual_max_grad_norm
        )
    report["seconds"] = round(time.perf_counter() - started, 1)
    if out is not None:
        write_json(Path(out), report, default=float)
    return report


def _eps(row: dict) -> str:
    spent = row["privacy"]["epsilon"]
    return "∞ (not private)" if spent is None else f"{spent:.2f} (target {row['epsilon_target']:g})"


def render(report: dict) -> str:
    lines = [
        f"Differential privacy on {report['dataset']}: {report['train_images']} training / {report['test_images']} "
        f"test images, δ = {report['delta']:g}",
    ]
    if report["gan"]:
        lines.append("  GAN (DP-SGD discriminator, GroupNorm in every row); judged on held-out images")
        lines.append(
            f"  {'ε spent':<24} {'steps':>7} {'class acc':>10} {'real':>7} {'Fréchet':>9} {'floor':>7} {'σ':>7}"
        )
    for r in report["gan"]:
        sigma = r["privacy"].get("noise_multiplier")
        lines.append(
            f"  {_eps(r):<24} {r['steps']:>7} {r['class_accuracy']:>10.3f} {r['class_accuracy_real']:>7.3f} "
            f"{r['frechet_distance']:>9.2f} {r['frechet_distance_floor']:>7.2f} "
            f"{'-' if sigma is None else f'{sigma:.2f}':>7}"
        )
    if "visual" in report:
        lines.append("  Visual preference model (user-level DP-SGD); warm AUC of a withheld interaction")
        lines.append(f"  {'ε spent':<24} {'AUC':>7} {'u·v':>7} {'popularity':>11} {'cold recall':>12}")
        for r in report["visual"]:
            lines.append(
                f"  {_eps(r):<24} {r['auc']:>7.4f} {r['auc_embeddings']:>7.4f} {r['auc_popularity']:>11.4f} "
                f"{r['cold_recall']:>12.4f}"
            )
    lines.append("  Anchors: " + "; ".join(report["anchors"].values()))
    return "\n".join(lines)
