"""A class/attribute-conditional GAN: conditional-BatchNorm generator, projection discriminator.

Generator: residual up-sampling blocks whose BatchNorm gains and biases are predicted from the
condition (conditional BN, de Vries et al. 2017; as in SNGAN/BigGAN). Discriminator: residual
down-sampling blocks with spectral normalisation (Miyato et al., ICLR 2018) and a projection head
(Miyato & Koyama, ICLR 2018): D(x, y) = ψ(φ(x)) + Σ_a ⟨E_a(y_a), φ(x)⟩, one embedding per attribute.
With ``d_norm="group"`` the discriminator uses GroupNorm (Wu & He, ECCV 2018) after each convolution and no
spectral norm: the variant DP-SGD can train, since Opacus computes per-example gradients for GroupNorm but
not through spectral norm's reparametrised weights (its DCGAN example makes the same swap).
Training (hinge loss, EMA of the generator, DiffAugment) lives in ``engine.training.gan``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import spectral_norm

from models.io import load_state, read_config, save_module

ModuleT = TypeVar("ModuleT", bound=nn.Module)
ARCHS = ("resnet", "dcgan", "upsample")


@dataclass(frozen=True, kw_only=True)
class GANConfig:
    """Architecture of the conditional GAN; travels inside every saved generator."""

    attribute_names: tuple[str, ...]  # e.g. ("class", "colour", "pattern")
    cardinalities: tuple[int, ...]  # number of values per attribute, same order
    # "resnet" (SNGAN/BigGAN-style residual blocks), "dcgan" (one transposed conv per block, ~4x cheaper) or
    # "upsample" (dcgan's cost class with nearest-neighbour up-sampling and a 3x3 conv: no checkerboard)
    arch: str = "resnet"
    image_size: int = 64  # a power of two, 16..128
    channels: int = 3
    z_dim: int = 64
    embed_dim: int = 32  # per-attribute embedding width in the generator
    g_width: int = 32  # channels of the last generator block; doubles towards 4x4, capped at max_width
    d_width: int = 32
    max_width: int = 256
    d_norm: str = "spectral"  # "spectral" (spectral norm) or "group" (GroupNorm, trainable with DP-SGD)

    def __post_init__(self) -> None:
        if len(self.attribute_names) != len(self.cardinalities) or not self.attribute_names:
            raise ValueError("attribute_names and cardinalities must be non-empty and of equal length")
        if any(c < 1 for c in self.cardinalities):
            raise ValueError(f"every cardinality must be >= 1; got {self.cardinalities}")
        if self.image_size not in (16, 32, 64, 128):
            raise ValueError(f"image_size must be 16, 32, 64 or 128; got {self.image_size}")
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}; got {self.arch!r}")
        if self.d_norm not in ("spectral", "group"):
            raise ValueError(f"d_norm must be 'spectral' or 'group'; got {self.d_norm!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (RGB); got {self.channels}")
        for name in ("z_dim", "embed_dim", "g_width", "d_width", "max_width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")

    @property
    def n_blocks(self) -> int:
        return int(math.log2(self.image_size)) - 2  # 4x4 -> image_size

    def widths(self, base: int) -> list[int]:
        """Channel widths from 4x4 to full resolution, e.g. [256, 256, 128, 64, 32] for 64x64."""
        return [min(base * 2 ** (self.n_blocks - k), self.max_width) for k in range(self.n_blocks + 1)]


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm whose per-channel gain and bias are linear in the condition embedding."""

    def __init__(self, num_features: int, cond_dim: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, affine=False)
        self.gain = nn.Linear(cond_dim, num_features)
        self.bias = nn.Linear(cond_dim, num_features)
        nn.init.zeros_(self.gain.weight)
        nn.init.zeros_(self.gain.bias)
        nn.init.zeros_(self.bias.weight)
        nn.init.zeros_(self.bias.bias)

    def forward(self, x: Tensor, e: Tensor) -> Tensor:  # x: (B, C, H, W), e: (B, cond_dim)
        h = self.bn(x)
        return h * (1.0 + self.gain(e))[:, :, None, None] + self.bias(e)[:, :, None, None]


class GBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, cond_dim: int) -> None:
        super().__init__()
        self.bn1 = ConditionalBatchNorm2d(c_in, cond_dim)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.bn2 = ConditionalBatchNorm2d(c_out, cond_dim)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        h = F.interpolate(F.relu(self.bn1(x, e)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h), e)))
        return h + self.skip(F.interpolate(x, scale_factor=2, mode="nearest"))


class GBlockLight(nn.Module):
    """DCGAN-style up-sampling: conditional BN, ReLU, 4x4 transposed convolution with stride 2."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int) -> None:
        super().__init__()
        self.bn = ConditionalBatchNorm2d(c_in, cond_dim)
        self.conv = nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        return self.conv(F.relu(self.bn(x, e)))


class GBlockUpsample(nn.Module):
    """Conditional BN, ReLU, nearest-neighbour up-sampling by 2, 3x3 convolution.

    A stride-2 transposed convolution paints each output pixel's parity class with its own subset of kernel
    taps, so unless training balances them exactly its images carry a period-2 checkerboard (Odena et al.,
    "Deconvolution and Checkerboard Artifacts", Distill 2016); resizing first and convolving after treats every
    output pixel alike. About twice the transposed convolution's cost at the same widths.
    """

    def __init__(self, c_in: int, c_out: int, cond_dim: int) -> None:
        super().__init__()
        self.bn = ConditionalBatchNorm2d(c_in, cond_dim)
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        return self.conv(F.interpolate(F.relu(self.bn(x, e)), scale_factor=2, mode="nearest"))


GENERATOR_BLOCKS: dict[str, type[nn.Module]] = {"resnet": GBlock, "dcgan": GBlockLight, "upsample": GBlockUpsample}


class Generator(nn.Module):
    """G(z, y): (B, z_dim) noise and (B, n_attributes) integer codes → (B, C, H, W) images in [-1, 1]."""

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = config
        widths = config.widths(config.g_width)
        self.embeddings = nn.ModuleList(nn.Embedding(n, config.embed_dim) for n in config.cardinalities)
        cond_dim = config.embed_dim * len(config.cardinalities) + config.z_dim
        self.fc = nn.Linear(config.z_dim + config.embed_dim * len(config.cardinalities), widths[0] * 16)
        block = GENERATOR_BLOCKS[config.arch]
        self.blocks = nn.ModuleList(block(widths[k], widths[k + 1], cond_dim) for k in range(config.n_blocks))
        self.out_bn = nn.BatchNorm2d(widths[-1])
        self.out_conv = nn.Conv2d(widths[-1], config.channels, 3, padding=1)
        self._width0 = widths[0]

    def condition_embedding(self, y: Tensor) -> Tensor:  # y: (B, n_attributes) int64
        return torch.cat([emb(y[:, a]) for a, emb in enumerate(self.embeddings)], dim=1)

    def forward(self, z: Tensor, y: Tensor, *, cond: Tensor | None = None) -> Tensor:
        """``cond`` replaces the looked-up condition embedding (B, n_attributes·embed_dim) when given,
        which lets callers optimise or interpolate conditions in embedding space."""
        e = self.condition_embedding(y) if cond is None else cond
        h = self.fc(torch.cat([z, e], dim=1)).view(z.shape[0], self._width0, 4, 4)
        ez = torch.cat([e, z], dim=1)  # every block sees the condition and the noise (BigGAN-style)
        for block in self.blocks:
            h = block(h, ez)
        return torch.tanh(self.out_conv(F.relu(self.out_bn(h))))

    def save(self, directory: Path, *, name: str = "generator_ema") -> None:
        """Write ``config.json`` and ``<name>.safetensors``. Bundles and study runs keep the generator that
        samples (the EMA one) under the default name, beside ``discriminator.safetensors``."""
        save_module(self, self.config, directory, name)

    @classmethod
    def load(cls, directory: Path, *, name: str = "generator_ema", device: str = "cpu") -> Generator:
        """Rebuild the generator from its saved config and weights, in eval mode."""
        generator = load_state(cls(read_config(GANConfig, directory)), directory, name, device=device)
        return generator.to(device).eval()


def _normed(layer: ModuleT, norm: str) -> ModuleT:
    """``layer`` spectrally normalised, or as it is when the discriminator uses GroupNorm instead."""
    return spectral_norm(layer) if norm == "spectral" else layer


def _group_norm(channels: int, norm: str) -> nn.Module:
    """GroupNorm of up to 32 groups (widths are powers of two) for ``norm == "group"``; identity otherwise."""
    return nn.GroupNorm(min(32, channels), channels) if norm == "group" else nn.Identity()


class DBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, *, downsample: bool, first: bool, norm: str = "spectral") -> None:
        super().__init__()
        self.first = first
        self.downsample = downsample
        self.conv1 = _normed(nn.Conv2d(c_in, c_out, 3, padding=1), norm)
        self.norm1 = _group_norm(c_out, norm)
        self.conv2 = _normed(nn.Conv2d(c_out, c_out, 3, padding=1), norm)
        self.norm2 = _group_norm(c_out, norm)
        self.skip = _normed(nn.Conv2d(c_in, c_out, 1), norm) if (c_in != c_out or downsample) else None

    def forward(self, x: Tensor) -> Tensor:
        h = x if self.first else F.relu(x)
        h = self.norm2(self.conv2(F.relu(self.norm1(self.conv1(h)))))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        s = x
        if self.skip is not None:
            if self.first:  # SNGAN's optimised first block: pool after the 1x1 projection
                s = self.skip(s)
                s = F.avg_pool2d(s, 2) if self.downsample else s
            else:
                s = self.skip(s)
                s = F.avg_pool2d(s, 2) if self.downsample else s
        return h + s


class DBlockLight(nn.Module):
    """DCGAN-style down-sampling: 4x4 convolution with stride 2 (spectrally normalised, or followed by GroupNorm
    except in the first block, as DCGAN leaves its first layer unnormalised), leaky ReLU."""

    def __init__(self, c_in: int, c_out: int, *, downsample: bool, first: bool, norm: str = "spectral") -> None:
        super().__init__()
        conv = nn.Conv2d(c_in, c_out, 4, stride=2, padding=1) if downsample else nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv = _normed(conv, norm)
        self.norm = nn.Identity() if first else _group_norm(c_out, norm)

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(self.norm(self.conv(x)), 0.1)


class Discriminator(nn.Module):
    """D(x, y) → (B,) realness logits, with a projection term per conditioning attribute."""

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = config
        widths = list(reversed(config.widths(config.d_width)))  # full resolution -> 4x4
        block = partial(DBlock if config.arch == "resnet" else DBlockLight, norm=config.d_norm)
        blocks = [block(config.channels, widths[0], downsample=True, first=True)]
        blocks += [block(widths[k], widths[k + 1], downsample=True, first=False) for k in range(config.n_blocks - 1)]
        blocks.append(block(widths[-2], widths[-1], downsample=False, first=False))
        self.blocks = nn.ModuleList(blocks)
        norm = config.d_norm
        self.linear = _normed(nn.Linear(widths[-1], 1), norm)
        self.projections = nn.ModuleList(_normed(nn.Embedding(n, widths[-1]), norm) for n in config.cardinalities)

    def features(self, x: Tensor) -> Tensor:  # x: (B, C, H, W) -> (B, width)
        h = x
        for block in self.blocks:
            h = block(h)
        return F.relu(h).sum(dim=(2, 3))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:  # y: (B, n_attributes)
        phi = self.features(x)
        out = self.linear(phi).squeeze(1)
        for a, proj in enumerate(self.projections):
            out = out + (proj(y[:, a]) * phi).sum(dim=1)
        return out

    def save(self, directory: Path) -> None:
        """Write ``config.json`` and ``discriminator.safetensors`` (with its spectral norms' u and v)."""
        save_module(self, self.config, directory, "discriminator")

    @classmethod
    def load(cls, directory: Path, *, device: str = "cpu") -> Discriminator:
        """The discriminator for evaluation and serving (realism scores), with its spectral norms folded in
        (see :func:`freeze_spectral_norm`)."""
        discriminator = load_state(cls(read_config(GANConfig, directory)), directory, "discriminator", device=device)
        return freeze_spectral_norm(discriminator.eval()).to(device)


def freeze_spectral_norm(module: ModuleT) -> ModuleT:
    """Fold every spectral normalisation into its weight (σ from the saved u and v, as in eval mode) and drop
    the hooks, so the module holds plain parameters.

    A discriminator loaded for serving is only evaluated, never trained; its hooks would recompute ``weight``
    on every call and store it on the module, shared state that concurrent requests race on: a call under
    ``torch.inference_mode`` could leave an inference tensor there just as another thread optimising a
    latent code reads it for backward (seen under the load benchmark).
    """
    from torch.nn.utils.spectral_norm import SpectralNorm, remove_spectral_norm

    for m in module.modules():
        for hook in list(m._forward_pre_hooks.values()):
            if isinstance(hook, SpectralNorm):
                remove_spectral_norm(m, hook.name)
    return module
