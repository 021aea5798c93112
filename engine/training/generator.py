"""The bundle's generator: the cascade's upscaler when there is one, then the conditional GAN, continued from the
parent bundle's where it fits (``engine.training.warm_start``), written with its manifest.

With ``config.gan.base_size`` set, the GAN trains on the catalogue images reduced to that size and an
:class:`models.sr.SRNet` learns to enlarge them back, on the same images (``models.cascade``); serving then
calls the pair as one generator of ``config.image_size`` images.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.artifacts.registry import ArtifactRegistry
from engine.training.components import Manifests
from engine.training.config import TrainConfig
from engine.training.gan import GANTrainingResult, train_gan
from engine.training.sr import train_net
from engine.training.warm_start import ContinueFrom, parent_upscaler, parent_weights
from features.attributes import AttributeEncoder
from features.degradations import downscale
from models.cascade import CascadeDiscriminator, CascadeGenerator
from models.gan import Discriminator, GANConfig, Generator
from models.io import config_to_dict, write_json
from models.sr import SRConfig, SRNet

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class TrainedGenerator:
    """The generator and discriminator as serving calls them (at ``image_size``), and what the manifest says."""

    generator: Generator | CascadeGenerator  # the EMA generator
    discriminator: Discriminator | CascadeDiscriminator
    result: GANTrainingResult
    record: dict


def base_images(images: np.ndarray, scale: int) -> np.ndarray:
    """(N, H, W, 3) uint8 → (N, H/scale, W/scale, 3): a cascade's GAN training images, reduced by the kernel its
    upscaler learns to invert (:func:`features.degradations.downscale`)."""
    if scale == 1:
        return images
    return np.stack([downscale(np.ascontiguousarray(im), scale) for im in images])


def train_upscaler(
    images: np.ndarray, scale: int, config: TrainConfig, *, show_progress: bool, start_from: SRNet | None = None
) -> tuple[SRNet, dict]:
    """The cascade's SR net, trained on ``images`` (the catalogue at the served size) and their reductions, with
    the ``sr`` section's architecture and optimiser settings, for ``gan.upscaler_steps`` (or
    ``gan.upscaler_seconds`` if sooner)."""
    return train_net(
        f"x{scale}",
        list(images),
        dataclasses.replace(config.sr, steps=config.gan.upscaler_steps),
        seconds=config.gan.upscaler_seconds,
        seed=config.seed + 7,
        show_progress=show_progress,
        start_from=start_from,
    )


def generator_into(
    directory: Path,
    images: np.ndarray,  # (N, S, S, 3) uint8 catalogue images at config.image_size
    codes: np.ndarray,  # (N, n_attributes)
    encoder: AttributeEncoder,
    config: TrainConfig,
    manifest: Manifests,
    *,
    registry: ArtifactRegistry,
    continue_from: ContinueFrom,
    show_progress: bool,
) -> TrainedGenerator:
    """Train the bundle's generator into ``directory`` (``generator/``) and return it as serving calls it."""
    base_size = config.gan.base_size or config.image_size
    scale = config.image_size // base_size
    gcfg = GANConfig(
        attribute_names=encoder.attributes,
        cardinalities=encoder.cardinalities,
        image_size=base_size,
        **config.gan.model_fields(),
    )
    private = config.gan_training.privacy.enabled
    weights = parent_weights(registry, continue_from, gcfg, encoder, scale, private=private)
    upscaler, upscaler_record = None, None
    if scale > 1:  # continued too, from the upscaler the parent's GAN was trained beside
        parent = parent_upscaler(registry, weights.source) if weights is not None else None
        if parent is not None and parent.config != SRConfig(
            scale=scale, width=config.sr.width, blocks=config.sr.blocks
        ):
            parent = None  # another upscaler architecture: train it afresh
        upscaler, upscaler_record = train_upscaler(
            images, scale, config, show_progress=show_progress, start_from=parent
        )
    result = train_gan(
        base_images(images, scale),
        codes,
        gcfg,
        config.gan_training,
        seed=config.seed,
        checkpoint_dir=directory.parent.parent / f".checkpoints-{directory.parent.name}"
        if config.gan_training.checkpoint_every
        else None,
        show_progress=show_progress,
        warm_start=weights,
    )
    generator: Generator | CascadeGenerator = result.generator_ema
    discriminator: Discriminator | CascadeDiscriminator = result.discriminator
    if upscaler is not None:
        generator = CascadeGenerator(result.generator_ema, upscaler)
        discriminator = CascadeDiscriminator(result.discriminator, scale)
    generator.save(directory)
    result.generator.save(directory, name="generator")  # the trained (not averaged) one, for the next warm start
    result.discriminator.save(directory)
    steps_before = weights.steps if weights is not None else 0
    record = {
        "steps": result.steps,
        "total_steps": steps_before + result.steps,
        "seconds": round(result.seconds, 1),
        "stopped_early": result.stopped_early,
    }
    cascade = None
    if upscaler is not None:
        cascade = {
            "base_size": base_size,
            "scale": scale,
            "upscaler": {**(upscaler_record or {}), "continued": parent is not None},
        }
    write_json(
        directory / "manifest.json",
        manifest(
            "generator",
            {"model": config_to_dict(gcfg), "training": config_to_dict(config.gan_training)},
            record,
            history=result.history,
            privacy=result.privacy,
            continued_from={"bundle": weights.source, "steps": weights.steps} if weights is not None else None,
            cascade=cascade,
        ),
    )
    return TrainedGenerator(generator=generator, discriminator=discriminator, result=result, record=record)
