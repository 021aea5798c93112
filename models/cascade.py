"""A cascaded generator: the conditional GAN at a low resolution, then a learned ×2 or ×4 super-resolution net.

Cascades split generation into a cheap stage that learns the layout and colour of an image and an upsampler
that adds the detail (Denton et al., LAPGAN, NeurIPS 2015; Ho et al., "Cascaded Diffusion Models", JMLR 2022).
Here the GAN learns the catalogue at ``base_size`` (32 px costs about a fifth of a 64 px step on a CPU, so the
same minutes buy five times the steps) and an :class:`models.sr.SRNet` trained on the same catalogue's
(``base_size``, ``base_size · scale``) pairs makes the served native size. The upsampler is frozen: it never
trains with the GAN.

:class:`CascadeGenerator` and :class:`CascadeDiscriminator` answer the calls that serving makes of a generator
and a discriminator (``G(z, y)``, ``G.config``, ``D(x, y)``) at the served size, so a bundle's readers need not
know that there is a cascade. The discriminator judges a served image at ``base_size``, reduced by the same
anti-aliased bicubic kernel that made its training images.

A cascade is saved as the base generator's folder plus an ``upscaler/`` folder holding the SR net;
:func:`load_generator` reads either kind.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from models.gan import Discriminator, GANConfig, Generator
from models.sr import SRNet

UPSCALER = "upscaler"  # the folder of a cascade's SR net, inside the generator's folder


class CascadeGenerator(nn.Module):
    """G(z, y) = U(G₀(z, y)): the base generator at ``base_size``, upscaled by the frozen ``upscaler``."""

    def __init__(self, base: Generator, upscaler: SRNet) -> None:
        super().__init__()
        if upscaler.config.scale < 2:
            raise ValueError(f"a cascade's upscaler must enlarge (scale 2 or 4); got scale {upscaler.config.scale}")
        self.base = base
        self.upscaler = upscaler.requires_grad_(False).eval()
        self.scale = upscaler.config.scale
        # what callers read of a generator: the served size, the base's noise and conditions
        self.config: GANConfig = dataclasses.replace(base.config, image_size=base.config.image_size * self.scale)

    @property
    def base_size(self) -> int:
        return self.base.config.image_size

    def condition_embedding(self, y: Tensor) -> Tensor:  # y: (B, n_attributes) int64
        return self.base.condition_embedding(y)

    def forward(self, z: Tensor, y: Tensor, *, cond: Tensor | None = None) -> Tensor:
        """(B, z_dim), (B, n_attributes) → (B, C, scale·base, scale·base) in [-1, 1]."""
        low = self.base(z, y, cond=cond)  # [-1, 1]
        high = self.upscaler((low + 1.0) / 2.0)  # the SR net works in [0, 1]
        return (high.clamp(0.0, 1.0) * 2.0 - 1.0).contiguous()

    def train(self, mode: bool = True) -> CascadeGenerator:
        super().train(mode)
        self.upscaler.eval()  # frozen: never in training mode
        return self

    def save(self, directory: Path, *, name: str = "generator_ema") -> None:
        """The base generator's files in ``directory`` and the upscaler's in ``directory/upscaler``."""
        self.base.save(directory, name=name)
        self.upscaler.save(Path(directory) / UPSCALER)


def reduce(x: Tensor, scale: int) -> Tensor:
    """(B, C, H, W) → (B, C, H/scale, W/scale) by anti-aliased bicubic reduction, the differentiable twin of
    :func:`features.degradations.downscale` (Pillow's, which made the base generator's training images)."""
    return F.interpolate(x, scale_factor=1.0 / scale, mode="bicubic", antialias=True, align_corners=False)


class CascadeDiscriminator(nn.Module):
    """D(x, y) for served-size images: the base GAN's discriminator on ``x`` reduced to the base size."""

    def __init__(self, base: Discriminator, scale: int) -> None:
        super().__init__()
        self.base = base
        self.scale = scale
        self.config: GANConfig = base.config

    def features(self, x: Tensor) -> Tensor:
        return self.base.features(reduce(x, self.scale))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:  # x: (B, C, H, W) at the served size -> (B,)
        return self.base(reduce(x, self.scale), y)


def is_cascade(directory: Path) -> bool:
    return (Path(directory) / UPSCALER).is_dir()


def load_generator(
    directory: Path, *, name: str = "generator_ema", device: str = "cpu"
) -> Generator | CascadeGenerator:
    """The generator saved in ``directory``: a cascade when it holds an ``upscaler/`` folder, else a plain one."""
    base = Generator.load(directory, name=name, device=device)
    if not is_cascade(directory):
        return base
    return CascadeGenerator(base, SRNet.load(Path(directory) / UPSCALER, device=device)).to(device).eval()


def load_discriminator(directory: Path, *, device: str = "cpu") -> Discriminator | CascadeDiscriminator:
    """The discriminator saved in ``directory``, judging images at the generator's served size."""
    base = Discriminator.load(directory, device=device)
    if not is_cascade(directory):
        return base
    scale = SRNet.load(Path(directory) / UPSCALER, device=device).config.scale
    return CascadeDiscriminator(base, scale).to(device).eval()
