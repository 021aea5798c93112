"""Training of the bundle's ``sr/`` component: ×2 and ×4 super-resolution and ×1 restoration nets.

Each net (``models.sr.SRNet``) learns from patches of the shop's high-resolution images
(``engine.training.sr_data``) with an L1 loss and Adam, its learning rate on a cosine from ``lr`` to zero over
whichever budget ends first (``steps`` or its share of ``seconds``). Super-resolution pairs are aligned crops of an
image and of its anti-aliased bicubic reduction (``features.degradations.downscale``), as in EDSR; restoration
pairs are clean crops and the same crops degraded by a random mix of blur, noise and JPEG (each applied with
probability one half, at least one, strengths drawn uniformly up to the config's maxima), so one blind net handles
each degradation alone and their mixes. Every crop is flipped and rotated at random (the eight symmetries of the
square). All randomness comes from the seed: batches from a numpy generator, initial weights from a forked torch
one.

After training, each net is measured on held-out images, beside bicubic interpolation (×2, ×4) or the degraded
input (restoration): the figures the component's manifest records.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from engine.artifacts.registry import component_manifest
from engine.training.sr_data import CatalogueImages, catalogue_hr_images, dataset_images
from features.degradations import BENCHMARK_DEGRADATIONS, Degradation, crop_to_multiple, downscale, upscale
from features.image_metrics import psnr
from models.io import config_to_dict, write_json
from models.sr import ROLES, SRComponent, SRConfig, SRNet, run_net

if TYPE_CHECKING:  # components imports the training config, which imports this module
    from engine.training.components import Manifests

logger = logging.getLogger(__name__)

#: Each net's share of the time budget: ×4 is the hardest and the one served most.
BUDGET_SHARES = {"x2": 0.3, "x4": 0.4, "restore": 0.3}
WARM_UP_STEPS = 50


@dataclass(frozen=True, kw_only=True)
class SRTrainConfig:
    """How the ``sr/`` component is trained; ``enabled`` False leaves it out of the bundle."""

    enabled: bool = True
    width: int = 16  # models.sr.SRConfig.width
    blocks: int = 3  # models.sr.SRConfig.blocks
    seconds: float = 75.0  # total training time of the three nets (BUDGET_SHARES)
    steps: int = 20000  # most steps per net
    batch_size: int = 16
    lr_patch: int = 24  # low-resolution side of an SR training crop (smaller where images are)
    restore_patch: int = 32  # side of a restoration training crop
    lr: float = 2e-3
    candidates: int = 4  # crops drawn per training crop; the most varied is kept (flat background teaches nothing)
    max_images: int = 2000  # high-resolution images read for training (sampled by the seed)
    hr_source: str = "auto"  # catalogue | drawings (demo store only) | auto: drawings for the demo store
    drawing_size: int = 256  # size of the demo store's drawings
    holdout: int = 32  # images held out to measure the nets for the manifest
    max_blur: float = 1.5  # restoration training: blur σ up to this (pixels)
    max_noise: float = 25.0  # noise σ up to this (8-bit units)
    min_jpeg_quality: int = 15  # JPEG quality from this to 90

    def __post_init__(self) -> None:
        if self.seconds <= 0 or self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("seconds and lr must be positive, steps and batch_size at least 1")
        if self.lr_patch < 8 or self.restore_patch < 8 or self.candidates < 1:
            raise ValueError("lr_patch and restore_patch must be at least 8 pixels, candidates at least 1")
        if self.hr_source not in ("auto", "catalogue", "drawings"):
            raise ValueError(f"hr_source must be auto, catalogue or drawings; got {self.hr_source!r}")
        if self.max_images < 2 or self.holdout < 1 or self.drawing_size < 64:
            raise ValueError("max_images >= 2, holdout >= 1 and drawing_size >= 64 are required")
        if self.max_blur < 0 or self.max_noise < 0 or not 1 <= self.min_jpeg_quality <= 90:
            raise ValueError("max_blur and max_noise must be >= 0, min_jpeg_quality in 1..90")


def _dihedral(a: np.ndarray, k: int) -> np.ndarray:
    """One of the eight symmetries of the square (k in 0..7) of an (H, W, C) array."""
    a = np.rot90(a, k % 4)
    return a[:, ::-1] if k >= 4 else a


def _to_tensor(batch: list[np.ndarray]) -> torch.Tensor:
    """A list of (H, W, 3) uint8 crops → (B, 3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.stack(batch).transpose(0, 3, 1, 2).copy()).float().div_(255.0)


class PatchPairs:
    """Random (input, target) crops of high-resolution images for one net: SR pairs for ``scale`` 2 or 4,
    degraded/clean pairs for ``scale`` 1."""

    def __init__(self, images: list[np.ndarray], scale: int, config: SRTrainConfig) -> None:
        self.scale = scale
        self.config = config
        if scale == 1:
            side = min(config.restore_patch, *(min(im.shape[:2]) for im in images))
            self.hr = images
            self.lr: list[np.ndarray] = []
        else:
            side = min(config.lr_patch, *(min(im.shape[:2]) // scale for im in images))
            self.hr = [crop_to_multiple(im, scale) for im in images]
            self.lr = [downscale(im, scale) for im in self.hr]
        if side < 8:
            raise ValueError(f"images are too small for ×{scale} training crops of at least 8 px")
        self.side = side  # input side

    def degradation(self, rng: np.random.Generator) -> Degradation:
        """A random mix of blur, noise and JPEG: each with probability ½, at least one."""
        c = self.config
        on = rng.random(3) < 0.5
        if not on.any():
            on[rng.integers(3)] = True
        return Degradation(
            name="random",
            blur=float(rng.uniform(0.3, c.max_blur)) if on[0] and c.max_blur > 0.3 else 0.0,
            noise=float(rng.uniform(1.0, c.max_noise)) if on[1] and c.max_noise > 1 else 0.0,
            jpeg_quality=int(rng.integers(c.min_jpeg_quality, 91)) if on[2] else 0,
        )

    def _corner(self, image: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
        """The top-left corner of a crop of side ``side``: the most varied of ``candidates`` random ones."""
        p, best, corner = self.side, -1.0, (0, 0)
        for _ in range(self.config.candidates):
            y, x = int(rng.integers(0, image.shape[0] - p + 1)), int(rng.integers(0, image.shape[1] - p + 1))
            spread = float(image[y : y + p, x : x + p].std())
            if spread > best:
                best, corner = spread, (y, x)
        return corner

    def batch(self, size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs (B, 3, p, p), targets (B, 3, s·p, s·p)) in [0, 1]."""
        s, p = self.scale, self.side
        inputs, targets = [], []
        for k in rng.integers(0, len(self.hr), size=size):
            sym = int(rng.integers(8))
            if s == 1:
                y, x = self._corner(self.hr[k], rng)
                clean = np.ascontiguousarray(_dihedral(self.hr[k][y : y + p, x : x + p], sym))
                inputs.append(self.degradation(rng)(clean, rng))
                targets.append(clean)
            else:
                y, x = self._corner(self.lr[k], rng)
                inputs.append(_dihedral(self.lr[k][y : y + p, x : x + p], sym))
                targets.append(_dihedral(self.hr[k][s * y : s * (y + p), s * x : s * (x + p)], sym))
        return _to_tensor(inputs), _to_tensor(targets)


def train_net(
    role: str,
    images: list[np.ndarray],
    config: SRTrainConfig,
    *,
    seconds: float,
    seed: int,
    show_progress: bool = True,
    start_from: SRNet | None = None,
) -> tuple[SRNet, dict]:
    """Train the ``role`` net (``x2``, ``x4`` or ``restore``) on crops of ``images`` for at most ``seconds`` (and
    ``config.steps``); returns it in eval mode with its training record (steps, seconds, loss history). With
    ``start_from`` (a net of the same config) it continues from that net's weights."""
    if role not in ROLES:
        raise ValueError(f"unknown SR role {role!r}; choose one of {sorted(ROLES)}")
    pairs = PatchPairs(images, ROLES[role], config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SRNet(SRConfig(scale=ROLES[role], width=config.width, blocks=config.blocks))
    if start_from is not None:
        if start_from.config != net.config:
            raise ValueError(f"cannot continue an SR net of {start_from.config} as one of {net.config}")
        net.load_state_dict(start_from.state_dict())
    optimiser = torch.optim.Adam(net.parameters(), lr=config.lr)
    rng = np.random.default_rng([seed, list(ROLES).index(role)])
    history: list[dict] = []
    running, count, step = 0.0, 0, 0
    started = time.perf_counter()
    net.train()
    bar = tqdm(total=config.steps, desc=f"SR {role}", unit="step", disable=not show_progress)
    while step < config.steps:
        elapsed = time.perf_counter() - started
        progress = max(step / config.steps, elapsed / seconds)
        if progress >= 1.0:
            break
        # a linear warm-up over the first steps (Adam's first updates of the zero-initialised output layer
        # otherwise push the net far from bicubic), then a cosine to zero over whichever budget ends first
        warm_up = min(1.0, (step + 1) / WARM_UP_STEPS)
        for group in optimiser.param_groups:
            group["lr"] = config.lr * warm_up * 0.5 * (1.0 + math.cos(math.pi * progress))
        inputs, targets = pairs.batch(config.batch_size, rng)
        loss = F.l1_loss(net(inputs), targets)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        step += 1
        running, count = running + loss.item(), count + 1
        if step % 50 == 0:
            history.append({"step": step, "seconds": round(elapsed, 1), "l1": running / count})
            bar.set_postfix(l1=f"{running / count:.4f}")
            running, count = 0.0, 0
        bar.update(1)
    bar.close()
    record = {"steps": step, "seconds": round(time.perf_counter() - started, 1), "input_side": pairs.side}
    logger.info("SR %s: %d steps in %.0f s", role, step, record["seconds"])
    return net.eval(), {**record, "history": history}


def measure(component: SRComponent, images: list[np.ndarray], *, seed: int) -> dict:
    """Mean PSNR (Y, dB) on held-out ``images``: each SR net beside bicubic, the restorer on each benchmark
    degradation beside the degraded input. A quick record for the manifest; `vitrine evaluate sr` and
    `vitrine evaluate restore` give the full tables."""
    out: dict = {}
    for role in ("x2", "x4"):
        s = ROLES[role]
        hr = [crop_to_multiple(im, s) for im in images if min(im.shape[:2]) >= 4 * s]
        bicubic, net = [], []
        for im in hr:
            lr = downscale(im, s)
            bicubic.append(psnr(im, upscale(lr, s), shave=s))
            net.append(psnr(im, run_net(component.nets[role], lr[None])[0], shave=s))
        out[role] = {"images": len(hr), "psnr_y": {"bicubic": float(np.mean(bicubic)), "sr": float(np.mean(net))}}
    restorer = component.nets["restore"]
    rng = np.random.default_rng([seed, 99])
    restore = {}
    for degradation in BENCHMARK_DEGRADATIONS:
        degraded = [degradation(im, rng) for im in images]
        restore[degradation.name] = {
            "degraded": float(np.mean([psnr(a, b) for a, b in zip(images, degraded, strict=True)])),
            "restored": float(
                np.mean([psnr(a, run_net(restorer, b[None])[0]) for a, b in zip(images, degraded, strict=True)])
            ),
        }
    out["restore"] = {"images": len(images), "psnr_y": restore}
    return out


def train_sr(
    images: list[np.ndarray], config: SRTrainConfig, *, seed: int, show_progress: bool = True
) -> tuple[SRComponent, dict]:
    """Train the three nets on all but ``config.holdout`` of ``images`` (chosen by ``seed``), sharing
    ``config.seconds`` by :data:`BUDGET_SHARES`; returns the component and its record (training, held-out PSNR)."""
    if len(images) < 2:
        raise ValueError(f"super-resolution needs at least 2 high-resolution images; got {len(images)}")
    order = np.random.default_rng(seed).permutation(len(images))
    n_hold = min(config.holdout, len(images) // 5 or 1)
    held, train = [images[k] for k in order[:n_hold]], [images[k] for k in order[n_hold:]]
    nets, training = {}, {}
    for offset, role in enumerate(ROLES):
        nets[role], training[role] = train_net(
            role,
            train,
            config,
            seconds=config.seconds * BUDGET_SHARES[role],
            seed=seed + offset,
            show_progress=show_progress,
        )
    component = SRComponent(nets=nets)
    held_out = measure(component, held, seed=seed)
    for role in ("x2", "x4"):
        p = held_out[role]["psnr_y"]
        logger.info("SR %s held out: %.2f dB (bicubic %.2f)", role, p["sr"], p["bicubic"])
    record = {"training": training, "held_out": held_out, "images": {"train": len(train), "held_out": n_hold}}
    return component, record


def _manifest_parts(component: SRComponent, config: SRTrainConfig, record: dict) -> tuple[dict, dict, dict]:
    """(config, metrics, extra) of an SR component's manifest."""
    cfg = {
        "model": {r: config_to_dict(n.config) for r, n in component.nets.items()},
        "training": config_to_dict(config),
    }
    return cfg, record["held_out"], {"training": record["training"], "images": record["images"]}


def sr_into(
    directory: Path,
    catalogue: CatalogueImages,
    config: SRTrainConfig,
    manifest: Manifests,
    *,
    seed: int,
    show_progress: bool,
) -> dict:
    """Train the ``sr/`` component on the shop's high-resolution images and write it into ``directory``;
    returns its held-out figures and the image source used."""
    images, source = catalogue_hr_images(
        catalogue,
        config.hr_source,
        max_images=config.max_images,
        drawing_size=config.drawing_size,
        seed=seed,
        show_progress=show_progress,
    )
    component, record = train_sr(images, config, seed=seed, show_progress=show_progress)
    component.save(directory)
    cfg, metrics, extra = _manifest_parts(component, config, record)
    write_json(Path(directory) / "manifest.json", manifest("sr", cfg, metrics, hr_source=source, **extra))
    return {"hr_source": source, **metrics}


def train_sr_run(
    dataset: str,
    data: Path | None,
    out: Path,
    config: SRTrainConfig,
    *,
    seed: int = 0,
    show_progress: bool = True,
) -> dict:
    """Train an SR component on the training split of a labelled image collection (``sr_data.DATASETS``) and
    write it to ``out`` (the layout of a bundle's ``sr/``, which `vitrine evaluate sr --model` reads); returns
    its manifest."""
    images = dataset_images(
        dataset,
        data,
        "train",
        max_images=config.max_images,
        seed=seed,
        drawing_size=config.drawing_size,
        show_progress=show_progress,
    )
    component, record = train_sr(images, config, seed=seed, show_progress=show_progress)
    component.save(out)
    cfg, metrics, extra = _manifest_parts(component, config, record)
    where = str(Path(data).resolve()) if data else None
    manifest = component_manifest(
        component="sr",
        seed=seed,
        data_fingerprint=f"{dataset}:{where}",
        config=cfg,
        metrics=metrics,
        extra={"dataset": dataset, "data_path": where, "split": "train", **extra},
    )
    write_json(Path(out) / "manifest.json", manifest)
    return manifest
