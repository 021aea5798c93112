"""Training of the conditional VAE baseline, in the shared loop of ``engine.training.scaffold`` (budgets,
history, resumable checkpoints), like the GAN.

Loss per image (negative ELBO, Kingma & Welling 2014, eq. 10): −log p(x | z, y) + β·KL(q(z | x, y) ‖ N(0, I)),
with a Gaussian likelihood whose one shared σ is set to its optimum, σ² = the batch's mean squared error
(σ-VAE, Rybkin et al. 2021, eq. 4): this balances the two terms without a hand-tuned β, and gives sharper
samples than a fixed σ. ``max_seconds`` stops on wall-clock time so the VAE and the GAN can be given the
same training time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.training.scaffold import GeneratorTraining, LoopConfig, LoopResult, TrainingImages, run_training
from models.pixels import to_float
from models.vae import ConditionalVAE, VAEConfig


@dataclass(frozen=True, kw_only=True)
class VAETrainConfig(LoopConfig):
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    beta_kl: float = 1.0  # β of the KL term; 1 is the ELBO
    kl_warmup: int = 500  # steps over which β ramps linearly from 0 (avoids early posterior collapse)
    min_log_sigma: float = -6.0  # soft lower clip of the shared decoder log σ

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lr <= 0 or self.beta_kl < 0 or self.kl_warmup < 0:
            raise ValueError("lr must be positive, beta_kl and kl_warmup non-negative")


@dataclass(kw_only=True)
class VAETrainingResult(LoopResult):
    vae: ConditionalVAE


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


class VAETraining(GeneratorTraining):
    """One step: encode a batch, decode a posterior sample, and descend the negative ELBO with β warmed up."""

    kind = "vae"
    metrics = ("loss", "nll", "kl")
    shown = (("nll", ".1f"), ("kl", ".1f"))
    model_config: VAEConfig
    train_config: VAETrainConfig

    def __init__(self, data: TrainingImages, config: VAEConfig, train_config: VAETrainConfig, *, seed: int) -> None:
        super().__init__(data, config, train_config, seed=seed)
        self.vae = build_vae(config, seed).to(self.device)
        betas = (train_config.beta1, train_config.beta2)
        self.opt = torch.optim.Adam(self.vae.parameters(), lr=train_config.lr, betas=betas)

    def networks(self) -> dict[str, torch.nn.Module]:
        return {"vae": self.vae}

    def optimisers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt": self.opt}

    def step(self, done: int, rng: torch.Generator) -> dict[str, float]:
        vae, cfg = self.vae, self.train_config
        idx = torch.randint(0, len(self.data.images), (cfg.batch_size,), generator=rng)
        x = to_float(self.data.images[idx]).to(self.device)
        y = self.data.conditions[idx].to(self.device)
        eps = torch.randn(cfg.batch_size, self.model_config.z_dim, generator=rng).to(self.device)
        mu, logvar = vae.encode(x, y)
        x_hat = vae(vae.reparameterise(mu, logvar, eps), y)
        nll = gaussian_nll_shared_sigma(x_hat, x, min_log_sigma=cfg.min_log_sigma).mean()
        kl = vae.kl(mu, logvar).mean()
        warm = min(1.0, (done + 1) / cfg.kl_warmup) if cfg.kl_warmup else 1.0
        loss = nll + cfg.beta_kl * warm * kl
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": loss.item(), "nll": nll.item(), "kl": kl.item()}


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
    training = VAETraining(
        TrainingImages.checked(images, conditions, config, model="VAE"), config, train_config, seed=seed
    )
    loop = run_training(training, checkpoint_dir=checkpoint_dir, resume=resume, show_progress=show_progress)
    return VAETrainingResult(**vars(loop), vae=training.vae.eval())
