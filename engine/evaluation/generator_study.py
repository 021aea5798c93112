"""Train, evaluate and benchmark the conditional generators (GAN, and the VAE baseline) on a labelled image
collection: Fashion-MNIST, Myntra, H&M or a demo store.

A *run* is a folder::

    RUN/run.json            dataset, rule, attribute vocabulary, model and training configs, steps, seconds
    RUN/model/              the generator that samples (the GAN's EMA generator, or the VAE)
    RUN/checkpoint/         the resumable training checkpoint (optimisers, EMA, step, RNG state)
    RUN/report.json         written by ``evaluate_run``: every metric beside its real-vs-real floor
    RUN/contact_sheet.png   rows = classes, columns = samples, each sample above its nearest training image

Generators train on the dataset's training split only; evaluation uses its held-out split. The judges
(the classifier whose features the distances use, and the independent classifier that judges conditional
accuracy) train on the same real training split, never on generated images, and are cached in a
``judges`` folder shared by every run on that dataset.

DiffAugment is on by default for small catalogues (fewer than ``engine.training.gan.SMALL_CATALOGUE``
training images), where a discriminator overfits (Zhao et al. 2020 report the gain shrinking as data
grow); ``--diffaugment on|off`` overrides it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from engine.evaluation.generator import evaluate_generator, generate_images, nearest_neighbours
from engine.training.classifier import ClassifierTrainConfig, train_classifier
from engine.training.gan import GANTrainConfig, diffaugment_default, train_gan
from engine.training.scaffold import LoopConfig, changed_settings
from engine.training.vae import VAETrainConfig, train_vae
from features.attributes import AttributeEncoder
from features.image_datasets import ImageDataset, read_fashion_mnist, read_myntra, store_images
from features.readers import read_store
from models.classifier import AttributeClassifier, ClassifierConfig
from models.gan import GANConfig, Generator
from models.io import config_to_dict, write_json
from models.vae import ConditionalVAE, VAEConfig

logger = logging.getLogger(__name__)

DATASETS = ("fashion_mnist", "myntra", "hm", "demo")
MODELS = ("gan", "vae")
RUN_SCHEMA = 1


# ---------------------------------------------------------------------------------------------- data


def load_dataset(name: str, path: Path, *, max_images: int | None = None, show_progress: bool = True) -> ImageDataset:
    """One of ``DATASETS`` at its documented size: Fashion-MNIST 32×32 grey; the others 64×64 RGB.

    H&M and demo stores are conditioned on (class, colour) — H&M's product_type_name and
    colour_group_name — with values that have at least 100 images (10 in a demo store, which is small).
    """
    path = Path(path)
    if name == "fashion_mnist":
        ds = read_fashion_mnist(path, size=32)
    elif name == "myntra":
        ds = read_myntra(path, size=64, max_images=max_images, show_progress=show_progress)
        max_images = None  # already applied before reading the files
    elif name in ("hm", "demo"):
        ds = store_images(
            read_store(path),
            size=64,
            attributes=("class", "colour"),
            min_count=100 if name == "hm" else 10,
            show_progress=show_progress,
        )
    else:
        raise ValueError(f"unknown dataset {name!r}; choose one of {list(DATASETS)}")
    ds = replace(ds, name=name)  # the kind, so a run can reload its data by it
    if max_images is not None and len(ds.images) > max_images:
        keep = np.zeros(len(ds.images), dtype=bool)
        keep[np.random.default_rng(0).choice(len(ds.images), max_images, replace=False)] = True
        ds = ds.subset(keep)
    train, test = int((~ds.is_test).sum()), int(ds.is_test.sum())
    if train < 2 or test < 2:
        raise ValueError(f"{name} at {path}: {train} training and {test} test images; both need at least 2")
    logger.info("%s: %d training and %d test images; %s", name, train, test, ds.rule)
    return ds


def encode(ds: ImageDataset, encoder: AttributeEncoder | None = None) -> tuple[AttributeEncoder, np.ndarray]:
    """The attribute vocabulary (fitted on the dataset unless given) and (N, n_attributes) codes."""
    encoder = encoder or AttributeEncoder(ds.attributes).fit(ds.labels)
    codes = encoder.transform(ds.labels)
    if (codes < 0).any():
        raise ValueError(f"{ds.name}: labels outside the run's vocabulary; was the run trained on other data?")
    return encoder, codes


# ---------------------------------------------------------------------------------------------- training


def train_run(
    ds: ImageDataset,
    out: Path,
    *,
    model: str = "gan",
    seconds: float | None = None,
    steps: int = 100_000,
    batch_size: int = 64,
    arch: str = "dcgan",
    width: int = 32,
    diffaugment: bool | None = None,
    seed: int = 0,
    device: str = "cpu",
    checkpoint_every: int = 500,
    resume: bool = False,
    data_path: str = "",
    show_progress: bool = True,
) -> dict:
    """Train a GAN or a VAE on ``ds``'s training split for ``steps`` or ``seconds``, whichever ends first."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {list(MODELS)}; got {model!r}")
    out = Path(out)
    if resume and not (out / "run.json").is_file():
        raise FileNotFoundError(f"--resume: {out} holds no run.json; start the run without --resume")
    encoder, codes = encode(ds)
    train = ~ds.is_test
    images, conds = ds.images[train], codes[train]
    size, channels = ds.images.shape[1], ds.images.shape[3]
    common = {
        "attribute_names": tuple(ds.attributes),
        "cardinalities": encoder.cardinalities,
        "arch": arch,
        "image_size": size,
        "channels": channels,
        "g_width": width,
    }
    loop = {"steps": steps, "batch_size": batch_size, "max_seconds": seconds, "checkpoint_every": checkpoint_every}
    fit = {"seed": seed, "checkpoint_dir": out / "checkpoint", "resume": resume, "show_progress": show_progress}
    started = time.perf_counter()
    if model == "gan":
        model_config: GANConfig | VAEConfig = GANConfig(**common, d_width=width)
        train_config: GANTrainConfig | VAETrainConfig = GANTrainConfig(**loop, diffaugment=diffaugment, device=device)
    else:
        model_config = VAEConfig(**common, e_width=width)
        train_config = VAETrainConfig(**loop, device=device)
    if resume:
        _check_resume(read_run(out), ds, model, seed, train_config)
    if model == "gan":
        result = train_gan(images, conds, model_config, train_config, **fit)
        result.generator_ema.cpu().save(out / "model")
        aug = result.diffaugment
    else:
        aug = False
        result = train_vae(images, conds, model_config, train_config, **fit)
        result.vae.cpu().save(out / "model")  # with its encoder, so it can be trained further
    info = {
        "schema_version": RUN_SCHEMA,
        "dataset": ds.name,
        "data_path": data_path,
        "rule": ds.rule,
        "train_images": int(train.sum()),
        "test_images": int((~train).sum()),
        "encoder": encoder.to_dict(),
        "model": model,
        "diffaugment": aug,
        "model_config": config_to_dict(model_config),
        "train_config": config_to_dict(train_config),
        "seed": seed,
        "steps": result.steps,
        "training_seconds": round(result.seconds, 1),
        "stopped_early": result.stopped_early,
        "wall_seconds_this_call": round(time.perf_counter() - started, 1),
        "history": result.history[-20:],
        "torch_threads": torch.get_num_threads(),
    }
    write_json(out / "run.json", info)  # atomically: a resumed run rewrites it
    logger.info(
        "trained %s on %s: %d steps in %.0fs (diffaugment %s); written to %s",
        model.upper(),
        ds.name,
        result.steps,
        result.seconds,
        "on" if aug else "off",
        out,
    )
    return info


def _check_resume(previous: dict, ds: ImageDataset, model: str, seed: int, train_config: LoopConfig) -> None:
    """Refuse, before any training, to continue a run on other data, another model or other training settings,
    as its run.json records them (the trainer checks the checkpoint too: architecture, seed, settings, data)."""
    now = {"dataset": ds.name, "rule": ds.rule, "model": model, "seed": seed}
    differs = [f"{k} ({previous.get(k)!r} → {v!r})" for k, v in now.items() if previous.get(k) != v]
    differs += changed_settings(previous.get("train_config", {}), train_config)
    if differs:
        raise ValueError(
            "--resume would continue the run with other settings: " + ", ".join(differs) + ". Resume with the "
            "run's own settings (only steps, seconds, checkpointing, logging and device may change), or start a "
            "new run in another folder."
        )


def read_run(run: Path) -> dict:
    path = Path(run) / "run.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run} is not a generator run (no run.json); make one with `vitrine train generator`")
    info = json.loads(path.read_text())
    if info.get("schema_version") != RUN_SCHEMA:
        raise ValueError(f"{path}: run schema {info.get('schema_version')}, this Vitrine reads {RUN_SCHEMA}")
    return info


def load_run_generator(run: Path, info: dict, *, device: str = "cpu") -> nn.Module:
    """The run's sampling network, called as ``g(z, y)``."""
    if info["model"] == "gan":
        return Generator.load(Path(run) / "model", device=device)
    return ConditionalVAE.load(Path(run) / "model", device=device)


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
    """Issue 3's targets for this dataset, each with the figure it was judged on."""
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
