"""Evaluate and benchmark the conditional generators (GAN, and the VAE baseline) on a labelled image
collection: Fashion-MNIST, Myntra, H&M or a demo store. Runs (data, training, the run folder) are
:mod:`engine.evaluation.generator_runs`.

The judges (the classifier whose features the distances use, and the independent classifier that judges
conditional accuracy) train on the dataset's real training split, never on generated images, and are
cached in a ``judges`` folder shared by every run on that dataset. :func:`evaluate_run` writes a run's
report.json and contact_sheet.png; :func:`benchmark` trains a GAN and a VAE for the same time and judges
them in the same harness against the study's targets.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from engine.evaluation.generator import evaluate_generator, generate_images, nearest_neighbours
from engine.evaluation.generator_runs import encode, load_run_generator, read_run, train_run
from engine.training.classifier import ClassifierTrainConfig, train_classifier
from engine.training.gan import diffaugment_default
from features.attributes import AttributeEncoder
from features.image_datasets import ImageDataset
from models.classifier import AttributeClassifier, ClassifierConfig
from models.io import write_json

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------- judges


def judges(
    ds: ImageDataset,
    codes: np.ndarray,
    directory: Path,
    *,
    epochs: int = 6,
    device: str = "cpu",
    show_progress: bool = True,
) -> tuple[AttributeClassifier, AttributeClassifier, dict]:
    """The feature network and the independent judge, trained on the real training split (cached).

    The cache is keyed by the dataset's name, rule, size and the epochs; any change retrains them.
    """
    directory = Path(directory)
    key = {"dataset": ds.name, "rule": ds.rule, "images": len(ds.images), "epochs": epochs}
    meta_path = directory / "judges.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == key:
            logger.info("judges: reusing %s", directory)
            return (
                AttributeClassifier.load(directory / "features", device=device),
                AttributeClassifier.load(directory / "judge", device=device),
                meta["metrics"],
            )
    train = ~ds.is_test
    size, channels = ds.images.shape[1], ds.images.shape[3]
    base = ClassifierConfig(
        attribute_names=tuple(ds.attributes),
        cardinalities=tuple(int(c) for c in codes.max(axis=0) + 1),
        image_size=size,
        channels=channels,
    )
    tcfg = ClassifierTrainConfig(epochs=epochs, holdout=0.0, device=device)
    metrics: dict = {}
    nets = {}
    # Two networks of different widths and seeds: the judge of conditional accuracy is never the network
    # whose feature space the distances are computed in.
    for name, config, seed in (("features", replace(base, width=24), 11), ("judge", base, 23)):
        net, m = train_classifier(ds.images[train], codes[train], config, tcfg, seed=seed, show_progress=show_progress)
        net.save(directory / name)
        nets[name] = net
        metrics[name] = m
    write_json(meta_path, {"key": key, "metrics": metrics})
    return nets["features"], nets["judge"], metrics


# ---------------------------------------------------------------------------------------------- reports


def contact_sheet(
    generator: nn.Module,
    encoder: AttributeEncoder,
    train_images: np.ndarray,
    train_codes: np.ndarray,
    path: Path,
    *,
    columns: int = 8,
    max_rows: int = 16,
    seed: int = 0,
) -> Path:
    """Rows = classes (the first attribute, most frequent first); each row of samples sits above a strip
    of each sample's nearest real training image (pixel distance), so copies are seen at a glance. Other
    attributes are drawn from the class's own training images, so every condition is one that exists."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(train_codes[:, 0], return_counts=True)
    classes = classes[np.argsort(-counts)][:max_rows]
    requested = np.concatenate(
        [train_codes[rng.choice(np.flatnonzero(train_codes[:, 0] == c), columns)] for c in classes]
    )
    samples = generate_images(generator, requested, seed=seed)
    _, nearest = nearest_neighbours(samples, train_images)
    neighbours = train_images[nearest]
    size, channels = samples.shape[1], samples.shape[3]
    gap = 2
    sheet = np.full((len(classes) * (2 * size + 3 * gap), columns * (size + gap), channels), 255, dtype=np.uint8)
    for r in range(len(classes)):
        y = r * (2 * size + 3 * gap)
        for c in range(columns):
            k, x = r * columns + c, c * (size + gap)
            sheet[y : y + size, x : x + size] = samples[k]
            sheet[y + size + gap : y + 2 * size + gap, x : x + size] = neighbours[k]
    img = Image.fromarray(sheet[..., 0] if channels == 1 else sheet)
    if size < 64:  # small images (Fashion-MNIST's 32x32) are enlarged, pixel for pixel, to be seen
        scale = 64 // size
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    labels = [encoder.values_[encoder.attributes[0]][int(c)] for c in classes]
    path.with_suffix(".rows.txt").write_text(
        "rows, top to bottom (each: samples, then their nearest training images):\n" + "\n".join(labels) + "\n"
    )
    return path


def evaluate_run(
    run: Path,
    ds: ImageDataset,
    *,
    judges_dir: Path,
    samples: int = 5000,
    classifier_epochs: int = 6,
    device: str = "cpu",
    show_progress: bool = True,
) -> dict:
    """The harness on the run's generator against the dataset's held-out images; writes report.json and
    contact_sheet.png into the run."""
    run = Path(run)
    info = read_run(run)
    encoder = AttributeEncoder.from_dict(info["encoder"])
    _, codes = encode(ds, encoder)
    feature_net, judge, judge_metrics = judges(
        ds, codes, judges_dir, epochs=classifier_epochs, device=device, show_progress=show_progress
    )
    generator = load_run_generator(run, info, device=device)
    train = ~ds.is_test
    report = evaluate_generator(
        generator,
        train_images=ds.images[train],
        train_codes=codes[train],
        test_images=ds.images[~train],
        test_codes=codes[~train],
        judge=judge,
        feature_net=feature_net,
        attribute_names=list(ds.attributes),
        samples=samples,
        device=device,
        show_progress=show_progress,
    )
    report = {
        "dataset": ds.name,
        "rule": ds.rule,
        "model": info["model"],
        "diffaugment": info["diffaugment"],
        "steps": info["steps"],
        "training_seconds": info["training_seconds"],
        "judges": judge_metrics,
        **report,
    }
    write_json(run / "report.json", report, default=float)
    contact_sheet(generator, encoder, ds.images[train], codes[train], run / "contact_sheet.png")
    return report


HEADLINE = (
    "frechet_distance",
    "kid",
    "precision",
    "recall",
    "density",
    "coverage",
    "diversity_ratio",
    "memorisation_pixel",
)


def format_report(report: dict) -> str:
    m = report["metrics"]
    lines = [
        f"{report['model'].upper()} on {report['dataset']}: {report['steps']} steps, "
        f"{report['training_seconds']:.0f} s of training, diffaugment {'on' if report['diffaugment'] else 'off'}",
        f"  {'metric':<24}{'generated':>12}{'real floor':>12}",
    ]
    keys = [*HEADLINE, *sorted(k for k in m if k.startswith("accuracy_"))]
    for key in keys:
        if key in m:
            lines.append(f"  {key:<24}{m[key]['generated']:>12.4f}{m[key]['real_floor']:>12.4f}")
    fid = report.get("standard_fid", {})
    lines.append(
        f"  standard FID: {fid['generated']:.2f} (floor {fid['real_floor']:.2f})"
        if fid.get("available")
        else f"  {fid.get('reason', 'standard FID: not computed')}"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- benchmark


def _target(name: str, value: float, limit: float, *, at_least: bool, strict: bool = False) -> dict:
    """``strict`` for the "<" and ">" targets: a tie with the limit does not meet them."""
    ok = value > limit if at_least else value < limit
    if not strict:
        ok = ok or value == limit
    return {"target": name, "value": value, "limit": limit, "met": bool(ok)}


def targets(dataset: str, gan: dict, vae: dict | None) -> list[dict]:
    """The targets a generator must meet on this dataset (against the real floor, and the GAN against the VAE
    trained for as long), each with the figure it was judged on."""
    g = gan["metrics"]
    out = []
    if dataset == "fashion_mnist":
        out.append(
            _target(
                "GAN class accuracy / real-image accuracy ≥ 0.90",
                g["accuracy_class"]["share_of_real"],
                0.90,
                at_least=True,
            )
        )
        out.append(_target("GAN coverage ≥ 0.7", g["coverage"]["generated"], 0.7, at_least=True))
        fd = g["frechet_distance"]
        out.append(
            _target("GAN Fréchet distance ≤ 3 × real floor", fd["generated"] / fd["real_floor"], 3.0, at_least=False)
        )
    if dataset == "myntra":
        out.append(_target("GAN colour accuracy ≥ 0.80", g["accuracy_colour"]["generated"], 0.80, at_least=True))
        out.append(_target("GAN class accuracy ≥ 0.85", g["accuracy_class"]["generated"], 0.85, at_least=True))
    if vae is not None:
        v = vae["metrics"]
        fd_ratio = g["frechet_distance"]["generated"] / v["frechet_distance"]["generated"]
        out.append(_target("GAN Fréchet distance / VAE's < 1", fd_ratio, 1.0, at_least=False, strict=True))
        coverage_gain = g["coverage"]["generated"] - v["coverage"]["generated"]
        out.append(_target("GAN coverage − VAE's > 0", coverage_gain, 0.0, at_least=True, strict=True))
    return out


def benchmark(
    ds: ImageDataset,
    out: Path,
    *,
    seconds: float,
    compare_diffaugment: bool = False,
    samples: int = 5000,
    classifier_epochs: int = 6,
    seed: int = 0,
    device: str = "cpu",
    data_path: str = "",
    show_progress: bool = True,
) -> dict:
    """GAN and VAE with the same training time on the same data, evaluated in the same harness; with
    ``compare_diffaugment`` also the GAN with DiffAugment flipped from its default."""
    out = Path(out)
    runs: dict[str, dict] = {}
    plan = [("gan", None, "gan"), ("vae", None, "vae")]
    if compare_diffaugment:
        default = diffaugment_default(int((~ds.is_test).sum()))
        plan.append(("gan", not default, f"gan_diffaugment_{'on' if not default else 'off'}"))
    for model, aug, name in plan:
        train_run(
            ds,
            out / name,
            model=model,
            seconds=seconds,
            diffaugment=aug,
            seed=seed,
            device=device,
            data_path=data_path,
            show_progress=show_progress,
        )
        runs[name] = evaluate_run(
            out / name,
            ds,
            judges_dir=out / "judges",
            samples=samples,
            classifier_epochs=classifier_epochs,
            device=device,
            show_progress=show_progress,
        )
    result = {
        "dataset": ds.name,
        "rule": ds.rule,
        "seconds_per_model": seconds,
        "machine": {"torch_threads": torch.get_num_threads(), "device": device},
        "runs": runs,
        "targets": targets(ds.name, runs["gan"], runs["vae"]),
    }
    write_json(out / "benchmark.json", result, default=float)
    return result


def format_benchmark(result: dict) -> str:
    lines = [
        f"generator benchmark on {result['dataset']} ({result['rule']}); {result['seconds_per_model']:.0f} s per model"
    ]
    lines += [format_report(r) for r in result["runs"].values()]
    lines.append("targets:")
    for t in result["targets"]:
        lines.append(f"  {'PASS' if t['met'] else 'MISS'}  {t['target']}: {t['value']:.4f} (limit {t['limit']})")
    return "\n".join(lines)
