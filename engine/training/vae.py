"""Training loop of the conditional VAE baseline, with resumable checkpoints like ``engine.training.gan``.

Loss per image (negative ELBO, Kingma & Welling 2014, eq. 10): −log p(x | z, y) + β·KL(q(z | x, y) ‖ N(0, I)),
with a Gaussian likelihood whose one shared σ is set to its optimum, σ² = the batch's mean squared error
(σ-VAE, Rybkin et al. 2021, eq. 4): this balances the two terms without a hand-tuned β, and gives sharper
samples than a fixed σ. ``max_seconds`` stops on wall-clock time so the VAE and the GAN can be given the
same training time.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from models.io import config_from_dict, config_to_dict
from models.pixels import to_tensor_images
from models.vae import ConditionalVAE, VAEConfig

logger = logging.getLogger(__name__)

CHECKPOINT_SCHEMA = 1


@dataclass(frozen=True, kw_only=True)
class VAETrainConfig:
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    beta_kl: float = 1.0  # β of the KL term; 1 is the ELBO
    kl_warmup: int = 500  # steps over which β ramps linearly from 0 (avoids early posterior collapse)
    min_log_sigma: float = -6.0  # soft lower clip of the shared decoder log σ
    max_seconds: float | None = None  # stop early once training has run this long (the run records it)
    checkpoint_every: int = 0  # steps between checkpoints; 0 writes only the final one (if a folder is given)
    log_every: int = 50
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 2:
            raise ValueError("steps must be >= 1 and batch_size >= 2")
        if self.lr <= 0 or self.beta_kl < 0 or self.kl_warmup < 0:
            raise ValueError("lr must be positive, beta_kl and kl_warmup non-negative")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError("max_seconds must be positive or None")
        if self.checkpoint_every < 0 or self.log_every < 1:
            raise ValueError("checkpoint_every must be >= 0 and log_every >= 1")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'cpu' or 'cuda[:n]'; got {self.device!r}")


@dataclass(kw_only=True)
class VAETrainingResult:
    vae: ConditionalVAE
    steps: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False


def gaussian_nll_shared_sigma(x_hat: torch.Tensor, x: torch.Tensor, *, min_log_sigma: float = -6.0) -> torch.Tensor:
    """−log p(x | x̂) per example (B,) under N(x̂, σ²I) with σ² = the batch's mean squared error.

    log σ is soft-clipped from below at ``min_log_sigma`` (Rybkin et al. 2021) so a perfect batch cannot
    drive the loss to −∞.
    """
    d = x[0].numel()
    sq = F.mse_loss(x_hat, x, reduction="none").flatten(1)
    log_sigma = 0.5 * sq.mean().clamp_min(1e-12).log()
    log_sigma = min_log_sigma + F.softplus(log_sigma - min_log_sigma)
    return 0.5 * sq.sum(dim=1) / (2.0 * log_sigma).exp() + d * log_sigma + 0.5 * d * math.log(2.0 * math.pi)


def build_vae(config: VAEConfig, seed: int) -> ConditionalVAE:
    """A fresh VAE initialised from ``seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ConditionalVAE(config)


def _checkpoint_path(directory: Path) -> Path:
    return Path(directory) / "checkpoint.pt"


def train_vae(
    images: np.ndarray,  # (N, H, W, C) uint8
    conditions: np.ndarray,  # (N, n_attributes) int64 codes
    config: VAEConfig,
    train_config: VAETrainConfig,
    *,
    seed: int = 0,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    show_progress: bool = True,
) -> VAETrainingResult:
    """Train the conditional VAE; with ``resume`` continue from ``checkpoint_dir``'s checkpoint.

    All randomness (batches, posterior noise) comes from one ``torch.Generator`` seeded with ``seed`` and
    saved in checkpoints, so a resumed run continues the same random stream as an uninterrupted one.
    """
    data = to_tensor_images(images)
    conds = torch.as_tensor(np.asarray(conditions, dtype=np.int64))
    if len(data) != len(conds) or conds.ndim != 2 or conds.shape[1] != len(config.cardinalities):
        raise ValueError(
            f"{len(data)} images need (N, {len(config.cardinalities)}) conditions; got {tuple(conds.shape)}"
        )
    if data.shape[1] != config.channels or data.shape[2] != config.image_size:
        raise ValueError(
            f"images are {tuple(data.shape[1:])} but the VAE is configured for "
            f"{config.channels}x{config.image_size}x{config.image_size}"
        )
    if (conds < 0).any() or (conds >= torch.tensor(config.cardinalities)).any():
        raise ValueError("conditions hold codes outside [0, cardinality); encode them with AttributeEncoder")
    device = torch.device(train_config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device on this machine")

    vae = build_vae(config, seed).to(device)
    opt = torch.optim.Adam(vae.parameters(), lr=train_config.lr, betas=(train_config.beta1, train_config.beta2))
    rng = torch.Generator().manual_seed(seed)
    start_step, elapsed, history = 0, 0.0, []
    if resume:
        if checkpoint_dir is None or not _checkpoint_path(checkpoint_dir).is_file():
            raise FileNotFoundError(f"resume asked for, but there is no checkpoint.pt in {checkpoint_dir}")
        state = torch.load(_checkpoint_path(checkpoint_dir), map_location=device, weights_only=False)
        if state.get("schema_version") != CHECKPOINT_SCHEMA or state.get("kind") != "vae":
            raise ValueError(
                f"{_checkpoint_path(checkpoint_dir)} is not a VAE checkpoint of schema {CHECKPOINT_SCHEMA} "
                f"(kind {state.get('kind')!r}, schema {state.get('schema_version')})"
            )
        if config_from_dict(VAEConfig, state["config"], source="checkpoint") != config:
            raise ValueError("the checkpoint was trained with a different VAEConfig; resume with the same one")
        vae.load_state_dict(state["vae"])
        opt.load_state_dict(state["opt"])
        rng.set_state(state["rng"])
        start_step, elapsed, history = state["step"], state["seconds"], state["history"]
        logger.info("resumed VAE training at step %d from %s", start_step, checkpoint_dir)

    def ckpt(step: int) -> None:
        """Everything a resumed run needs: weights, optimiser, step, RNG state (torch's format: only this
        loop reads it, never the API)."""
        if checkpoint_dir is None:
            return
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        tmp = Path(checkpoint_dir) / "checkpoint.pt.tmp"
        torch.save(
            {
                "schema_version": CHECKPOINT_SCHEMA,
                "kind": "vae",
                "step": step,
                "seconds": elapsed,
                "seed": seed,
                "config": config_to_dict(config),
                "train_config": config_to_dict(train_config),
                "vae": vae.state_dict(),
                "opt": opt.state_dict(),
                "rng": rng.get_state(),
                "history": history,
            },
            tmp,
        )
        tmp.replace(_checkpoint_path(checkpoint_dir))

    n, bs = len(data), train_config.batch_size
    vae.train()
    stopped_early = False
    step = start_step
    running = {"loss": 0.0, "nll": 0.0, "kl": 0.0}
    summed = 0  # steps in ``running``: after a resume between two records, fewer than log_every
    total = None if train_config.max_seconds is not None else train_config.steps
    bar = tqdm(total=total, initial=start_step, desc="VAE", unit="step", disable=not show_progress)
    t0 = time.perf_counter() - elapsed
    while step < train_config.steps:
        idx = torch.randint(0, n, (bs,), generator=rng)
        x = data[idx].float().div_(127.5).sub_(1.0).to(device)
        y = conds[idx].to(device)
        eps = torch.randn(bs, config.z_dim, generator=rng).to(device)
        mu, logvar = vae.encode(x, y)
        x_hat = vae(vae.reparameterise(mu, logvar, eps), y)
        nll = gaussian_nll_shared_sigma(x_hat, x, min_log_sigma=train_config.min_log_sigma).mean()
        kl = vae.kl(mu, logvar).mean()
        warm = min(1.0, (step + 1) / train_config.kl_warmup) if train_config.kl_warmup else 1.0
        loss = nll + train_config.beta_kl * warm * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1

        running["loss"] += loss.item()
        running["nll"] += nll.item()
        running["kl"] += kl.item()
        summed += 1
        bar.update(1)
        elapsed = time.perf_counter() - t0
        if step % train_config.log_every == 0 or step == train_config.steps:
            record = {"step": step, "seconds": round(elapsed, 2), **{key: v / summed for key, v in running.items()}}
            history.append(record)
            running, summed = dict.fromkeys(running, 0.0), 0
            bar.set_postfix(nll=f"{record['nll']:.1f}", kl=f"{record['kl']:.1f}")
        if train_config.checkpoint_every and step % train_config.checkpoint_every == 0:
            ckpt(step)
        if train_config.max_seconds is not None and elapsed >= train_config.max_seconds:
            stopped_early = step < train_config.steps
            break
    bar.close()
    if summed and step < train_config.steps:  # a time-budget stop between two records
        history.append({"step": step, "seconds": round(elapsed, 2), **{key: v / summed for key, v in running.items()}})
    ckpt(step)
    logger.info("trained VAE: %d steps in %.1fs%s", step, elapsed, " (time budget reached)" if stopped_early else "")
    return VAETrainingResult(vae=vae.eval(), steps=step, seconds=elapsed, history=history, stopped_early=stopped_early)
