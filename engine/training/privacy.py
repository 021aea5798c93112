"""Differentially private training with DP-SGD (Abadi et al., CCS 2016) through Opacus.

DP-SGD bounds what one training unit (one catalogue image for the GAN's discriminator, one shopper for the
visual preference model) can move the weights: every step draws a Poisson sample of units (each kept with
probability q = batch_size / n), clips each unit's gradient to L2 norm ``max_grad_norm``, sums the clipped
gradients and adds Gaussian noise of standard deviation ``noise_multiplier · max_grad_norm``. The noise
multiplier is chosen before training so that the planned steps spend ``target_epsilon`` at ``delta``; an
accountant (Rényi DP by default, Mironov 2017) then reports the ε actually spent by the steps that ran, which
is what a bundle's manifest records.

(ε, δ)-DP means: for any two training sets that differ in one unit, the probability of any set of trained
weights changes by at most a factor e^ε, plus δ. Opacus computes per-unit gradients with hooks on the layers
it supports (Linear, Conv, Embedding, GroupNorm, ...); BatchNorm mixes units in a batch and spectral norm
keeps its weight outside the parameters, so private networks use GroupNorm instead.

The noise comes from a seeded ``torch.Generator`` so runs reproduce; Opacus's ``secure_mode`` (noise robust to
floating-point attacks) is off, which a production release of private weights should turn on.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

ACCOUNTANTS = ("rdp", "prv", "gdp")


@dataclass(frozen=True, kw_only=True)
class PrivacyConfig:
    """DP-SGD for the visual preference model and the GAN's discriminator; off unless ``target_epsilon`` is set.

    ``target_epsilon`` is the budget each private component may spend over its planned steps, at ``delta``;
    ``max_grad_norm`` is the clipping bound C of one unit's gradient.
    """

    target_epsilon: float | None = None  # None: train without differential privacy
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    accountant: str = "rdp"  # "rdp" (Rényi DP), "prv" (privacy random variables) or "gdp" (Gaussian DP)
    pairs_per_shopper: int = 8  # visual model: (liked, random) image pairs drawn per sampled shopper and step

    def __post_init__(self) -> None:
        if self.target_epsilon is not None and not (self.target_epsilon > 0 and math.isfinite(self.target_epsilon)):
            raise ValueError(
                f"target_epsilon must be a positive finite number, or null to train without privacy; "
                f"got {self.target_epsilon!r}"
            )
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), far below 1/n for n training units; got {self.delta!r}")
        if not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive; got {self.max_grad_norm!r}")
        if self.accountant not in ACCOUNTANTS:
            raise ValueError(f"accountant must be one of {list(ACCOUNTANTS)}; got {self.accountant!r}")
        if self.pairs_per_shopper < 1:
            raise ValueError(f"pairs_per_shopper must be >= 1; got {self.pairs_per_shopper!r}")

    @property
    def enabled(self) -> bool:
        return self.target_epsilon is not None


def not_private() -> dict[str, Any]:
    """The manifest's privacy record of a component trained without differential privacy."""
    return {"private": False, "epsilon": None, "note": "not private: trained without differential privacy"}


def poisson_sample(n: int, sample_rate: float, rng: torch.Generator) -> torch.Tensor:
    """Indices of a Poisson sample of range(n): each kept independently with probability ``sample_rate``.

    The subsampling that the accountant's amplification assumes (Mironov et al. 2019), unlike a fixed-size batch.
    """
    return torch.nonzero(torch.rand(n, generator=rng) < sample_rate).flatten()


class PrivateStep:
    """One network's DP-SGD machinery: per-unit gradients, clipping, calibrated noise and the accountant.

    ``module`` is what the training step calls (per-unit gradients are recorded for it); ``optimizer`` wraps
    the given one. Call :meth:`step` once per training step, with ``took_step`` False for an empty Poisson
    sample (nothing was released, but the step is still counted: the accountant stays an upper bound).
    """

    def __init__(
        self,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        config: PrivacyConfig,
        *,
        n_units: int,
        batch_size: int,  # the expected number of units per step
        steps: int,  # the planned steps: the noise is calibrated to spend target_epsilon over them
        unit: str,  # what one unit is, for the record: "catalogue image", "shopper"
        seed: int,
    ) -> None:
        from opacus import GradSampleModule
        from opacus.accountants import create_accountant
        from opacus.accountants.utils import get_noise_multiplier
        from opacus.optimizers import DPOptimizer
        from opacus.validators import ModuleValidator

        if config.target_epsilon is None:
            raise ValueError("PrivateStep needs a PrivacyConfig with a target_epsilon")
        errors = ModuleValidator.validate(network, strict=False)
        if errors:
            raise ValueError(
                f"{type(network).__name__} cannot be trained with DP-SGD: {errors[0]}. Use GroupNorm in place of "
                "BatchNorm and no spectral norm (GANConfig(d_norm='group') for the discriminator)."
            )
        if n_units < 2:
            raise ValueError(f"differential privacy needs at least 2 training units; got {n_units}")
        self.config = config
        self.unit = unit
        self.n_units = n_units
        self.sample_rate = min(1.0, batch_size / n_units)
        self.expected_batch_size = max(1, round(self.sample_rate * n_units))
        self.planned_steps = steps
        self.noise_multiplier = float(
            get_noise_multiplier(
                target_epsilon=config.target_epsilon,
                target_delta=config.delta,
                sample_rate=self.sample_rate,
                steps=steps,
                accountant=config.accountant,
            )
        )
        self.network = network
        self.module = GradSampleModule(network, batch_first=True, loss_reduction="mean")
        self.noise = torch.Generator().manual_seed(seed)
        self.optimizer = DPOptimizer(
            optimizer,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=config.max_grad_norm,
            expected_batch_size=self.expected_batch_size,
            loss_reduction="mean",
            generator=self.noise,
        )
        self.accountant = create_accountant(mechanism=config.accountant)
        self.steps = 0
        logger.info(
            "DP-SGD for %s: %d %ss, sample rate %.4g, noise multiplier %.3f, clip %.3g, %d steps planned for "
            "ε = %g at δ = %g",
            type(network).__name__,
            n_units,
            unit,
            self.sample_rate,
            self.noise_multiplier,
            config.max_grad_norm,
            steps,
            config.target_epsilon,
            config.delta,
        )

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self, *, took_step: bool = True) -> None:
        """Clip, noise and apply the per-unit gradients of the last backward pass, and count the step."""
        if took_step:
            self.optimizer.step()
        self.zero_grad()
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)
        self.steps += 1

    def hooks(self, enabled: bool) -> None:
        """Turn per-unit gradient recording on or off (off while the network only passes gradients through,
        as the discriminator does for the generator's step)."""
        if enabled:
            self.module.enable_hooks()
        else:
            self.module.disable_hooks()

    def close(self) -> nn.Module:
        """Remove the per-unit gradient hooks once training is over; returns the plain network."""
        return self.module.to_standard_module()

    def epsilon(self) -> float:
        """ε spent so far at the config's δ (0 before the first step)."""
        if self.steps == 0:
            return 0.0
        return float(self.accountant.get_epsilon(delta=self.config.delta))

    def record(self) -> dict[str, Any]:
        """The manifest's privacy record: ε spent at δ and how it was spent."""
        return {
            "private": True,
            "epsilon": self.epsilon(),
            "delta": self.config.delta,
            "target_epsilon": self.config.target_epsilon,
            "unit": self.unit,
            "units": self.n_units,
            "sample_rate": self.sample_rate,
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.config.max_grad_norm,
            "steps": self.steps,
            "planned_steps": self.planned_steps,
            "accountant": self.config.accountant,
        }

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to go on spending the same budget: the accountant and the noise stream."""
        return {
            "accountant_history": list(self.accountant.history),
            "noise": self.noise.get_state(),
            "steps": self.steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.accountant.history = [tuple(h) for h in state["accountant_history"]]
        self.noise.set_state(state["noise"].cpu())
        self.steps = int(state["steps"])
