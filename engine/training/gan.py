"""Training loop of the conditional GAN: hinge loss, Adam (β1 = 0, β2 = 0.9), EMA generator, DiffAugment,
and resumable checkpoints.

Hinge loss (Lim & Ye 2017; Miyato et al. 2018):
    L_D = E[max(0, 1 − D(x, y))] + E[max(0, 1 + D(G(z, y), y))],   L_G = −E[D(G(z, y), y)].
The EMA generator (Karras et al. 2018; Yazıcı et al. 2019) is what gets saved for sampling.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from engine.training.augment import diff_augment
from models.gan import Discriminator, GANConfig, Generator
from models.io import config_from_dict, config_to_dict
from models.pixels import to_float, to_tensor_images

logger = logging.getLogger(__name__)

CHECKPOINT_SCHEMA = 1
# DiffAugment (Zhao et al. 2020) keeps a discriminator from memorising a small catalogue; its gain shrinks as
# data grow, so by default it is on below this many training images and off above.
SMALL_CATALOGUE = 20_000


def diffaugment_default(n_train_images: int) -> bool:
    return n_train_images < SMALL_CATALOGUE


@dataclass(frozen=True, kw_only=True)
class GANTrainConfig:
    steps: int = 2000
    batch_size: int = 64
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.0
    beta2: float = 0.9
    ema_decay: float = 0.999
    diffaugment: bool | None = None  # None: on for catalogues below SMALL_CATALOGUE training images
    translation: float = 0.125
    cutout: float = 0.5
    max_seconds: float | None = None  # stop early once training has run this long (the run records it)
    checkpoint_every: int = 0  # steps between checkpoints; 0 writes only the final one (if a folder is given)
    log_every: int = 50
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 2:
            raise ValueError("steps must be >= 1 and batch_size >= 2")
        if not (0.0 <= self.ema_decay < 1.0):
            raise ValueError(f"ema_decay must be in [0, 1); got {self.ema_decay}")
        if self.lr_g <= 0 or self.lr_d <= 0:
            raise ValueError("learning rates must be positive")
        if not (0 <= self.translation < 0.5 and 0 <= self.cutout < 1):
            raise ValueError("translation must be in [0, 0.5) and cutout in [0, 1)")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError("max_seconds must be positive or None")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'cpu' or 'cuda[:n]'; got {self.device!r}")


@dataclass(kw_only=True)
class GANTrainingResult:
    generator: Generator
    generator_ema: Generator
    discriminator: Discriminator
    steps: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    diffaugment: bool = False  # whether it was used


def build_gan(config: GANConfig, seed: int) -> tuple[Generator, Discriminator]:
    """Fresh generator and discriminator, initialised from ``seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Generator(config), Discriminator(config)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for pe, p in zip(ema.parameters(), model.parameters(), strict=True):
        pe.lerp_(p, 1.0 - decay)
    for be, b in zip(ema.buffers(), model.buffers(), strict=True):
        be.copy_(b)


def _checkpoint_path(directory: Path) -> Path:
    return Path(directory) / "checkpoint.pt"


def save_checkpoint(
    directory: Path,
    *,
    step: int,
    seconds: float,
    g,
    g_ema,
    d,
    opt_g,
    opt_d,
    rng: torch.Generator,
    gan_config: GANConfig,
    train_config: GANTrainConfig,
    seed: int,
    history: list[dict],
) -> None:
    """Everything a resumed run needs to continue exactly: weights, optimisers, EMA, step and RNG state.

    This file is a training checkpoint read only by this loop (never by the API, which loads the
    safetensors bundle), so torch's own format is used.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / "checkpoint.pt.tmp"
    torch.save(
        {
            "schema_version": CHECKPOINT_SCHEMA,
            "step": step,
            "seconds": seconds,
            "seed": seed,
            "gan_config": config_to_dict(gan_config),
            "train_config": config_to_dict(train_config),
            "generator": g.state_dict(),
            "generator_ema": g_ema.state_dict(),
            "discriminator": d.state_dict(),
            "opt_g": opt_g.state_dict(),
            "opt_d": opt_d.state_dict(),
            "rng": rng.get_state(),
            "history": history,
        },
        tmp,
    )
    tmp.replace(_checkpoint_path(directory))


def train_gan(
    images: np.ndarray,  # (N, H, W, C) uint8
    conditions: np.ndarray,  # (N, n_attributes) int64 codes
    gan_config: GANConfig,
    train_config: GANTrainConfig,
    *,
    seed: int = 0,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    show_progress: bool = True,
) -> GANTrainingResult:
    """Train the conditional GAN; with ``resume`` continue from ``checkpoint_dir``'s checkpoint.

    Fake images are generated with conditions drawn from the real batch, so the generator learns the
    catalogue's joint distribution of attributes. All randomness (batches, noise, augmentation) comes
    from one ``torch.Generator`` seeded with ``seed`` and saved in checkpoints, so a resumed run
    continues the same random stream as an uninterrupted one.
    """
    data = to_tensor_images(images)
    conds = torch.as_tensor(np.asarray(conditions, dtype=np.int64))
    if len(data) != len(conds) or conds.ndim != 2 or conds.shape[1] != len(gan_config.cardinalities):
        raise ValueError(
            f"{len(data)} images need (N, {len(gan_config.cardinalities)}) conditions; got {tuple(conds.shape)}"
        )
    if data.shape[1] != gan_config.channels or data.shape[2] != gan_config.image_size:
        raise ValueError(
            f"images are {tuple(data.shape[1:])} but the GAN is configured for "
            f"{gan_config.channels}x{gan_config.image_size}x{gan_config.image_size}"
        )
    card = torch.tensor(gan_config.cardinalities)
    if (conds < 0).any() or (conds >= card).any():
        raise ValueError("conditions hold codes outside [0, cardinality); encode them with AttributeEncoder")
    device = torch.device(train_config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device on this machine")

    g, d = build_gan(gan_config, seed)
    g_ema = copy.deepcopy(g).eval()
    g, d, g_ema = g.to(device), d.to(device), g_ema.to(device)
    for p in g_ema.parameters():
        p.requires_grad_(False)
    opt_g = torch.optim.Adam(g.parameters(), lr=train_config.lr_g, betas=(train_config.beta1, train_config.beta2))
    opt_d = torch.optim.Adam(d.parameters(), lr=train_config.lr_d, betas=(train_config.beta1, train_config.beta2))
    rng = torch.Generator().manual_seed(seed)
    start_step, elapsed, history = 0, 0.0, []

    if resume:
        if checkpoint_dir is None or not _checkpoint_path(checkpoint_dir).is_file():
            raise FileNotFoundError(f"resume asked for, but there is no checkpoint.pt in {checkpoint_dir}")
        state = torch.load(_checkpoint_path(checkpoint_dir), map_location=device, weights_only=False)
        if state.get("schema_version") != CHECKPOINT_SCHEMA:
            raise ValueError(f"checkpoint schema {state.get('schema_version')} is not {CHECKPOINT_SCHEMA}")
        saved_cfg = config_from_dict(GANConfig, state["gan_config"], source="checkpoint")
        if saved_cfg != gan_config:
            raise ValueError("the checkpoint was trained with a different GANConfig; resume with the same one")
        g.load_state_dict(state["generator"])
        g_ema.load_state_dict(state["generator_ema"])
        d.load_state_dict(state["discriminator"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        rng.set_state(state["rng"])
        start_step, elapsed, history = state["step"], state["seconds"], state["history"]
        logger.info("resumed GAN training at step %d from %s", start_step, checkpoint_dir)

    def ckpt(step: int) -> None:
        if checkpoint_dir is not None:
            save_checkpoint(
                checkpoint_dir,
                step=step,
                seconds=elapsed,
                g=g,
                g_ema=g_ema,
                d=d,
                opt_g=opt_g,
                opt_d=opt_d,
                rng=rng,
                gan_config=gan_config,
                train_config=train_config,
                seed=seed,
                history=history,
            )

    use_diffaugment = diffaugment_default(len(data)) if train_config.diffaugment is None else train_config.diffaugment

    def augment(x: torch.Tensor) -> torch.Tensor:
        if not use_diffaugment:
            return x
        return diff_augment(x, rng, translation=train_config.translation, cutout_ratio=train_config.cutout)

    n, bs = len(data), train_config.batch_size
    g.train()
    d.train()
    stopped_early = False
    step = start_step
    running = {"loss_d": 0.0, "loss_g": 0.0, "d_real": 0.0, "d_fake": 0.0}
    summed = 0  # steps in ``running``: after a resume between two records, fewer than log_every
    bar = tqdm(total=train_config.steps, initial=start_step, desc="GAN", unit="step", disable=not show_progress)
    t0 = time.perf_counter() - elapsed
    while step < train_config.steps:
        idx = torch.randint(0, n, (bs,), generator=rng)
        real = to_float(data[idx]).to(device)
        y = conds[idx].to(device)
        z = torch.randn(bs, gan_config.z_dim, generator=rng).to(device)
        # Discriminator step.
        with torch.no_grad():
            fake = g(z, y)
        d_real = d(augment(real), y)
        d_fake = d(augment(fake), y)
        loss_d = F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        # Generator step, on fresh noise with the same conditions.
        z = torch.randn(bs, gan_config.z_dim, generator=rng).to(device)
        loss_g = -d(augment(g(z, y)), y).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        step += 1
        # EMA with warm-up, so short runs are not dominated by the random initial weights.
        ema_update(g_ema, g, min(train_config.ema_decay, (1.0 + step) / (10.0 + step)))

        running["loss_d"] += loss_d.item()
        running["loss_g"] += loss_g.item()
        running["d_real"] += d_real.mean().item()
        running["d_fake"] += d_fake.mean().item()
        summed += 1
        bar.update(1)
        elapsed = time.perf_counter() - t0
        if step % train_config.log_every == 0 or step == train_config.steps:
            record = {
                "step": step,
                "seconds": round(elapsed, 2),
                **{key: v / summed for key, v in running.items()},
            }
            history.append(record)
            running, summed = dict.fromkeys(running, 0.0), 0
            bar.set_postfix(loss_d=f"{record['loss_d']:.3f}", loss_g=f"{record['loss_g']:.3f}")
        if train_config.checkpoint_every and step % train_config.checkpoint_every == 0:
            ckpt(step)
        if train_config.max_seconds is not None and elapsed >= train_config.max_seconds:
            stopped_early = step < train_config.steps
            break
    bar.close()
    ckpt(step)
    if stopped_early:
        logger.warning(
            "GAN training stopped at step %d of %d: max_seconds=%s reached",
            step,
            train_config.steps,
            train_config.max_seconds,
        )
    logger.info("trained GAN: %d steps in %.1fs (DiffAugment %s)", step, elapsed, "on" if use_diffaugment else "off")
    return GANTrainingResult(
        generator=g.eval(),
        generator_ema=g_ema.eval(),
        discriminator=d.eval(),
        steps=step,
        seconds=elapsed,
        history=history,
        stopped_early=stopped_early,
        diffaugment=use_diffaugment,
    )
