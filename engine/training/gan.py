"""Training of the conditional GAN: hinge loss, Adam (β1 = 0, β2 = 0.9), EMA generator and DiffAugment, in the
shared loop of ``engine.training.scaffold`` (budgets, history, resumable checkpoints).

Hinge loss (Lim & Ye 2017; Miyato et al. 2018):
    L_D = E[max(0, 1 − D(x, y))] + E[max(0, 1 + D(G(z, y), y))],   L_G = −E[D(G(z, y), y)].
The EMA generator (Karras et al. 2018; Yazıcı et al. 2019) is what gets saved for sampling.

With ``privacy.target_epsilon`` set, the discriminator trains with DP-SGD (``engine.training.privacy``; one unit
is one training image with its attributes) and the generator only ever sees the private discriminator's
gradients and public noise, so it is private by post-processing (as in DP-GAN, Xie et al. 2018).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from engine.training.augment import diff_augment
from engine.training.distributed import SINGLE_PROCESS, Ranks
from engine.training.privacy import PrivacyConfig, PrivateStep, not_private, poisson_sample
from engine.training.scaffold import GeneratorTraining, LoopConfig, LoopResult, TrainingImages, run_training
from models.gan import Discriminator, GANConfig, Generator
from models.pixels import to_float

logger = logging.getLogger(__name__)

# DiffAugment (Zhao et al. 2020) keeps a discriminator from memorising a small catalogue; its gain shrinks as
# data grow, so by default it is on below this many training images and off above.
SMALL_CATALOGUE = 20_000


# Steps over which the learning rates rise after a warm start (see GANTraining._ramp_learning_rates).
WARM_START_RAMP = 100


def diffaugment_default(n_train_images: int) -> bool:
    return n_train_images < SMALL_CATALOGUE


@dataclass(frozen=True, kw_only=True)
class GANTrainConfig(LoopConfig):
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.0
    beta2: float = 0.9
    ema_decay: float = 0.999
    diffaugment: bool | None = None  # None: on for catalogues below SMALL_CATALOGUE training images
    translation: float = 0.125
    cutout: float = 0.5
    # discriminator updates per generator update; a private GAN needs several, or its noisy discriminator falls
    # behind the generator (Bie et al., "Private GANs, revisited", 2023)
    d_steps: int = 1
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)  # DP-SGD for the discriminator when on

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (0.0 <= self.ema_decay < 1.0):
            raise ValueError(f"ema_decay must be in [0, 1); got {self.ema_decay}")
        if self.lr_g <= 0 or self.lr_d <= 0:
            raise ValueError("learning rates must be positive")
        if self.d_steps < 1:
            raise ValueError(f"d_steps must be >= 1; got {self.d_steps}")
        if not (0 <= self.translation < 0.5 and 0 <= self.cutout < 1):
            raise ValueError("translation must be in [0, 0.5) and cutout in [0, 1)")


@dataclass(kw_only=True)
class GANTrainingResult(LoopResult):
    generator: Generator
    generator_ema: Generator
    discriminator: Discriminator
    diffaugment: bool = False  # whether it was used
    privacy: dict = field(default_factory=not_private)  # ε spent at δ (see ``PrivateStep.record``)


@dataclass(frozen=True, kw_only=True)
class GANWeights:
    """A trained GAN's weights to continue from (a warm start): the three networks' state and the steps behind
    them, so the EMA's warm-up carries on where it stopped instead of starting over."""

    source: str  # where they came from, for logs and manifests (e.g. a bundle version)
    generator: dict[str, torch.Tensor]
    generator_ema: dict[str, torch.Tensor]
    discriminator: dict[str, torch.Tensor]  # with its spectral norms' u and v
    steps: int


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


class GANTraining(GeneratorTraining):
    """One step: a discriminator update on a real and a generated batch, then a generator update on fresh
    noise under the same conditions (drawn from the real batch, so the generator learns the catalogue's joint
    distribution of attributes), then the EMA update."""

    kind = "gan"
    metrics = ("loss_d", "loss_g", "d_real", "d_fake")
    shown = (("loss_d", ".3f"), ("loss_g", ".3f"))
    # A GAN history ends at its last full record when the time budget stops it, as it always has.
    records_stopped_tail = False
    # Distributed runs (engine.training.distributed): a step draws the global batch, keeps this process's rows
    # (``self.ranks.rows``) and trains both networks through their DDP replicas.
    distributable: ClassVar[tuple[str, ...]] = ("generator", "discriminator")
    model_config: GANConfig
    train_config: GANTrainConfig

    def __init__(self, data: TrainingImages, config: GANConfig, train_config: GANTrainConfig, *, seed: int) -> None:
        super().__init__(data, config, train_config, seed=seed)
        g, d = build_gan(config, seed)
        g_ema = copy.deepcopy(g).eval()
        self.g, self.d, self.g_ema = g.to(self.device), d.to(self.device), g_ema.to(self.device)
        for p in self.g_ema.parameters():
            p.requires_grad_(False)
        betas = (train_config.beta1, train_config.beta2)
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=train_config.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=train_config.lr_d, betas=betas)
        aug = train_config.diffaugment
        self.diffaugment = diffaugment_default(len(data.images)) if aug is None else aug
        self.steps_before = 0  # steps behind the starting weights (a warm start's)

    def _ramp_learning_rates(self, done: int) -> None:
        """After a warm start, the learning rates rise linearly over the first WARM_START_RAMP steps. The
        optimisers start afresh, and Adam's first update moves every weight by about the full learning rate
        whatever its gradient (its second moment is that one gradient squared), which on trained weights undoes
        part of what the parent learnt."""
        scale = min(1.0, (done + 1) / WARM_START_RAMP)
        for opt, lr in ((self.opt_g, self.train_config.lr_g), (self.opt_d, self.train_config.lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr * scale

    def warm_start(self, weights: GANWeights) -> None:
        """Start from ``weights`` instead of the seeded initialisation (the optimisers start afresh, their
        learning rates ramped up: :meth:`_ramp_learning_rates`). Not kept in checkpoints: a warm-started run is
        not resumed (bundles train without checkpoints)."""
        self.g.load_state_dict(weights.generator, strict=True)
        self.g_ema.load_state_dict(weights.generator_ema, strict=True)
        self.d.load_state_dict(weights.discriminator, strict=True)
        self.steps_before = weights.steps

    def networks(self) -> dict[str, torch.nn.Module]:
        return {"generator": self.g, "generator_ema": self.g_ema, "discriminator": self.d}

    def optimisers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt_g": self.opt_g, "opt_d": self.opt_d}

    def augment(self, x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:  # x: (B, C, H, W)
        if not self.diffaugment:
            return x
        cfg = self.train_config
        # Distributed, x is this process's rows of the global batch, and the whole batch's offsets are drawn.
        distributed = self.ranks.distributed
        batch, rows = (cfg.batch_size, self.ranks.rows(cfg.batch_size)) if distributed else (None, slice(None))
        return diff_augment(x, rng, translation=cfg.translation, cutout_ratio=cfg.cutout, batch_size=batch, rows=rows)

    def step(self, done: int, rng: torch.Generator) -> dict[str, float]:
        g, bs, z_dim = self.g, self.train_config.batch_size, self.model_config.z_dim
        if self.steps_before:
            self._ramp_learning_rates(done)
        # Discriminator steps; the generator's step below reuses the last one's conditions.
        sums = dict.fromkeys(("loss_d", "d_real", "d_fake"), 0.0)
        for _ in range(self.train_config.d_steps):
            figures, y = self._discriminator_step(rng)
            sums = {key: sums[key] + figures[key] for key in sums}
        d_figures = {key: v / self.train_config.d_steps for key, v in sums.items()}
        d = self.d
        # Generator step, on fresh noise with the same conditions.
        z = torch.randn(bs, z_dim, generator=rng)[self.ranks.rows(bs)].to(self.device)
        # Only the generator's replica: the discriminator's gradients from this step are never used.
        loss_g = -d(self.augment(self.replica("generator")(z, y), rng), y).mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        # EMA with warm-up, so short runs are not dominated by the random initial weights.
        steps = self.steps_before + done + 1
        ema_update(self.g_ema, g, min(self.train_config.ema_decay, (1.0 + steps) / (10.0 + steps)))
        return {**d_figures, "loss_g": loss_g.item()}

    def _discriminator_step(self, rng: torch.Generator) -> tuple[dict[str, float], torch.Tensor]:
        """One hinge-loss update of the discriminator on a real batch and a generated one; returns its figures
        and the batch's conditions."""
        g, d, bs, z_dim = self.g, self.replica("discriminator"), self.train_config.batch_size, self.model_config.z_dim
        rows = self.ranks.rows(bs)  # all of the batch in one process
        idx = torch.randint(0, len(self.data.images), (bs,), generator=rng)[rows]
        real = to_float(self.data.images[idx]).to(self.device)
        y = self.data.conditions[idx].to(self.device)
        z = torch.randn(bs, z_dim, generator=rng)[rows].to(self.device)
        with torch.no_grad():  # no gradients, so no replica; distributed, its BatchNorm is the global batch's still
            fake = g(z, y)
        d_real = d(self.augment(real, rng), y)
        d_fake = d(self.augment(fake, rng), y)
        loss_d = F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        return {"loss_d": loss_d.item(), "d_real": d_real.mean().item(), "d_fake": d_fake.mean().item()}, y


class PrivateGANTraining(GANTraining):
    """The GAN with a DP-SGD discriminator (``train_config.privacy``; the discriminator needs GroupNorm).

    One step: a Poisson sample of training images (rate batch_size / N) against as many generated images,
    each row's hinge terms clipped together (real image b and fake image b form unit b's gradient), noise
    added; then the generator's step through the discriminator with its per-unit hooks off. Generated
    images take conditions drawn uniformly from the attribute vocabulary, never from the private batch, so
    nothing but the private discriminator tells the generator about the data.
    """

    distributable = ()  # one process: its Poisson sampling and accountant are not split over processes

    def __init__(self, data: TrainingImages, config: GANConfig, train_config: GANTrainConfig, *, seed: int) -> None:
        if config.d_norm != "group":
            raise ValueError(
                "a private GAN needs a discriminator that DP-SGD can train: set the GAN's d_norm to 'group' "
                "(GroupNorm) instead of spectral norm"
            )
        super().__init__(data, config, train_config, seed=seed)
        self.private = PrivateStep(
            self.d,
            self.opt_d,
            train_config.privacy,
            n_units=len(data.images),
            batch_size=train_config.batch_size,
            steps=train_config.steps * train_config.d_steps,
            unit="catalogue image",
            seed=seed + 1,
        )
        self._cardinalities = torch.tensor(config.cardinalities)

    def extra_state(self) -> dict:
        return {"privacy": self.private.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        self.private.load_state_dict(state["privacy"])

    def _random_conditions(self, n: int, rng: torch.Generator) -> torch.Tensor:  # -> (n, n_attributes)
        u = torch.rand(n, len(self._cardinalities), generator=rng)
        return (u * self._cardinalities).long().clamp_max(self._cardinalities - 1).to(self.device)

    def step(self, done: int, rng: torch.Generator) -> dict[str, float]:
        g, z_dim, bs = self.g, self.model_config.z_dim, self.train_config.batch_size
        sums = dict.fromkeys(("loss_d", "d_real", "d_fake"), 0.0)
        for _ in range(self.train_config.d_steps):  # each one a private step, counted by the accountant
            figures = self._private_discriminator_step(rng)
            sums = {key: sums[key] + figures[key] for key in sums}
        d_figures = {key: v / self.train_config.d_steps for key, v in sums.items()}
        # Generator step: gradients pass through the (private) discriminator without touching its weights.
        self.private.hooks(False)
        self.d.requires_grad_(False)
        try:
            y_g = self._random_conditions(bs, rng)
            z = torch.randn(bs, z_dim, generator=rng).to(self.device)
            loss_g = -self.d(self.augment(g(z, y_g), rng), y_g).mean()
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            self.opt_g.step()
        finally:
            self.d.requires_grad_(True)
            self.private.hooks(True)
        steps = done + 1
        ema_update(self.g_ema, g, min(self.train_config.ema_decay, (1.0 + steps) / (10.0 + steps)))
        return {**d_figures, "loss_g": loss_g.item()}

    def _private_discriminator_step(self, rng: torch.Generator) -> dict[str, float]:
        g, z_dim = self.g, self.model_config.z_dim
        idx = poisson_sample(len(self.data.images), self.private.sample_rate, rng)
        n = len(idx)
        y_fake = self._random_conditions(n, rng)
        z = torch.randn(n, z_dim, generator=rng).to(self.device)
        figures = {"loss_d": 0.0, "d_real": 0.0, "d_fake": 0.0}
        if n:  # an empty Poisson sample releases nothing; the accountant counts the step all the same
            real = to_float(self.data.images[idx]).to(self.device)
            y = self.data.conditions[idx].to(self.device)
            with torch.no_grad():
                fake = g(z, y_fake)
            d = self.private.module
            d_real = d(self.augment(real, rng), y)
            d_fake = d(self.augment(fake, rng), y_fake)
            loss_d = F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()
            loss_d.backward()
            figures = {"loss_d": loss_d.item(), "d_real": d_real.mean().item(), "d_fake": d_fake.mean().item()}
        self.private.step(took_step=n > 0)
        return figures


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
    warm_start: GANWeights | None = None,
    ranks: Ranks = SINGLE_PROCESS,
) -> GANTrainingResult:
    """Train the conditional GAN; with ``resume`` continue from ``checkpoint_dir``'s checkpoint, with
    ``warm_start`` from another run's weights (a parent bundle's generator).

    All randomness (batches, noise, augmentation) comes from one ``torch.Generator`` seeded with ``seed`` and
    saved in checkpoints, so a resumed run continues the same random stream as an uninterrupted one. With
    ``ranks`` of several processes, this is one process of a distributed run (``engine.training.distributed``):
    it draws the same stream and trains on its rows of each global batch.
    """
    data = TrainingImages.checked(images, conditions, gan_config, model="GAN")
    trainer = PrivateGANTraining if train_config.privacy.enabled else GANTraining
    training = trainer(data, gan_config, train_config, seed=seed)
    if warm_start is not None:
        if isinstance(training, PrivateGANTraining):
            raise ValueError("a private GAN cannot warm-start: the weights it would start from are not private")
        training.warm_start(warm_start)
        logger.info("GAN warm-started from %s (%d steps behind it)", warm_start.source, warm_start.steps)
    logger.info("GAN training with DiffAugment %s", "on" if training.diffaugment else "off")
    loop = run_training(
        training, checkpoint_dir=checkpoint_dir, resume=resume, show_progress=show_progress, ranks=ranks
    )
    private = training.private if isinstance(training, PrivateGANTraining) else None
    if private is not None:
        private.close()
        logger.info(
            "private GAN: ε = %.3f spent at δ = %g over %d steps",
            private.epsilon(),
            private.config.delta,
            private.steps,
        )
    return GANTrainingResult(
        **vars(loop),
        generator=training.g.eval(),
        generator_ema=training.g_ema.eval(),
        discriminator=training.d.eval(),
        diffaugment=training.diffaugment,
        privacy=private.record() if private is not None else not_private(),
    )
