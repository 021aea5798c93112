"""Generator runs: the labelled image collections they train on, training a GAN or a VAE into a run folder,
and reading a run back. The study that evaluates and compares runs is :mod:`engine.evaluation.generator_study`.

A *run* is a folder::

    RUN/run.json            dataset, rule, attribute vocabulary, model and training configs, steps, seconds
    RUN/model/              the generator that samples (the GAN's EMA generator, or the VAE)
    RUN/checkpoint/         the resumable training checkpoint (optimisers, EMA, step, RNG state)
    RUN/report.json         written by ``evaluate_run``: every metric beside its real-vs-real floor
    RUN/contact_sheet.png   rows = classes, columns = samples, each sample above its nearest training image

Generators train on the dataset's training split only; evaluation uses its held-out split.

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
from torch import nn

from engine.evaluation.generator_choices import DATASETS, MODELS
from engine.training.distributed import SINGLE_PROCESS, Ranks
from engine.training.gan import GANTrainConfig, train_gan
from engine.training.scaffold import LoopConfig, changed_settings
from engine.training.vae import VAETrainConfig, train_vae
from features.attributes import AttributeEncoder
from features.image_datasets import ImageDataset, read_fashion_mnist, read_myntra, store_images
from features.readers import read_store
from models.gan import GANConfig, Generator
from models.io import config_to_dict, write_json
from models.vae import ConditionalVAE, VAEConfig

logger = logging.getLogger(__name__)

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
    ranks: Ranks = SINGLE_PROCESS,
) -> dict:
    """Train a GAN or a VAE on ``ds``'s training split for ``steps`` or ``seconds``, whichever ends first.

    With ``ranks`` of several processes (the GAN only), this is one process of a distributed run; rank 0 alone
    writes the run folder, which is the one a single process would write (``engine.training.distributed``).
    """
    if model not in MODELS:
        raise ValueError(f"model must be one of {list(MODELS)}; got {model!r}")
    if ranks.distributed and model != "gan":
        raise ValueError(f"--distributed trains the GAN only; train the {model.upper()} without it")
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
        result = train_gan(images, conds, model_config, train_config, **fit, ranks=ranks)
        if ranks.is_main:
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
    if not ranks.is_main:
        return info
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
