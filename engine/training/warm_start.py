"""Training that accumulates: a new bundle's GAN continues from its parent bundle's weights.

A 2-core CPU trains the demo GAN for a few minutes per bundle; the published conditional GANs train for 50k–100k
steps. Starting every retrain from scratch would throw each retrain's minutes away, so ``vitrine train``
continues from the serving bundle's generator and discriminator when they fit (the *same catalogue* for the
generator's purposes: the same architecture, the same attributes with the same values in the same order, the
same cascade), and trains afresh otherwise, saying why. ``--continue-from VERSION`` names the parent and
fails when it does not fit; ``--fresh`` never continues.

The optimisers' moments are not kept in a bundle, so they restart (Adam with β1 = 0 settles within a few
dozen steps); the EMA's warm-up continues from the parent's total steps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from engine.artifacts.registry import ArtifactRegistry
from engine.training.gan import GANWeights
from features.attributes import AttributeEncoder
from models.cascade import UPSCALER, is_cascade
from models.gan import GANConfig
from models.io import config_to_dict, read_config, read_json
from models.sr import SRNet

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ContinueFrom:
    """Which parent a bundle's GAN continues from: ``version`` (None: the serving bundle, when it fits), or
    never with ``fresh``."""

    version: str | None = None
    fresh: bool = False

    def __post_init__(self) -> None:
        if self.fresh and self.version is not None:
            raise ValueError("--fresh and --continue-from contradict each other; pass one")


def mismatch(parent_dir: Path, config: GANConfig, encoder: AttributeEncoder, upscale: int) -> str | None:
    """Why the GAN of the bundle at ``parent_dir`` cannot be continued by a GAN of ``config`` on a catalogue
    encoded by ``encoder``, with a cascade of ``upscale`` (1: none); None when it can."""
    gen_dir = parent_dir / "generator"
    if not (gen_dir / "config.json").is_file():
        return f"{parent_dir.name} has no generator"
    parent_config = read_config(GANConfig, gen_dir)
    if parent_config != config:
        ours, theirs = config_to_dict(config), config_to_dict(parent_config)
        changed = sorted(k for k, v in ours.items() if theirs.get(k) != v)
        return f"the generator's architecture or attributes changed ({', '.join(changed)})"
    if read_json(parent_dir / "catalogue" / "attributes.json") != encoder.to_dict():
        return "the catalogue's attribute values changed, so a condition code would mean another value"
    parent_upscale = read_json(gen_dir / UPSCALER / "config.json")["scale"] if is_cascade(gen_dir) else 1
    if parent_upscale != upscale:
        return f"the cascade changed (upscaling ×{parent_upscale} in the parent, ×{upscale} now)"
    return None


def load_weights(parent_dir: Path) -> GANWeights:
    """The GAN weights saved in a bundle. Bundles from before warm starts kept only the EMA generator, which
    then seeds the trained generator too."""
    from safetensors.torch import load_file

    gen_dir = parent_dir / "generator"
    ema = load_file(str(gen_dir / "generator_ema.safetensors"))
    raw = gen_dir / "generator.safetensors"
    manifest = read_json(gen_dir / "manifest.json")
    metrics = manifest.get("metrics", {})
    return GANWeights(
        source=parent_dir.name,
        generator=load_file(str(raw)) if raw.is_file() else {k: v.clone() for k, v in ema.items()},
        generator_ema=ema,
        discriminator=load_file(str(gen_dir / "discriminator.safetensors")),
        steps=int(metrics.get("total_steps", metrics.get("steps", 0))),
    )


def parent_upscaler(registry: ArtifactRegistry, version: str) -> SRNet | None:
    """The cascade upscaler of bundle ``version``, to continue from beside its GAN (None without one)."""
    gen_dir = registry.path(version) / "generator"
    return SRNet.load(gen_dir / UPSCALER).train() if is_cascade(gen_dir) else None


def parent_weights(
    registry: ArtifactRegistry,
    choice: ContinueFrom,
    config: GANConfig,
    encoder: AttributeEncoder,
    upscale: int,
    *,
    private: bool,
) -> GANWeights | None:
    """The weights a new bundle's GAN starts from under ``choice``, or None to train afresh (logged with why).
    A named parent that does not fit is an error saying what differs."""
    if choice.fresh:
        logger.info("GAN: training afresh (--fresh)")
        return None
    named = choice.version is not None
    version = choice.version or registry.current()
    if version is None:
        logger.info("GAN: training afresh (no serving bundle to continue from)")
        return None
    problem = "a private GAN trains afresh: its starting weights must not have seen the data" if private else None
    problem = problem or mismatch(registry.path(version), config, encoder, upscale)
    if problem is None:
        return load_weights(registry.path(version))
    if named:
        raise ValueError(f"cannot continue the GAN from bundle {version}: {problem}; train with --fresh instead")
    logger.info("GAN: training afresh rather than continuing from %s: %s", version, problem)
    return None
