"""A conditional VAE (Kingma & Welling 2014; Sohn et al. 2015): the baseline generator.

The decoder p(x | z, y) *is* the GAN's :class:`models.gan.Generator` (same conditional-BN blocks, same
per-attribute embeddings), so the two generators differ only in how they are trained, and anything that
calls a generator — the evaluation harness, the Personaliser — can call this one the same way:
``vae(z, y) -> (B, C, H, W)`` images in [-1, 1]. The encoder q(z | x, y) is a strided-convolution trunk
whose 4x4 features are joined with the condition embeddings before the two linear heads (μ, log σ²).
Training (Gaussian likelihood with the optimal shared σ, Rybkin et al. 2021) lives in ``engine.training.vae``.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from models.gan import GANConfig, Generator
from models.io import load_state, read_config, save_module


@dataclass(frozen=True, kw_only=True)
class VAEConfig:
    """Architecture of the conditional VAE; travels inside every saved model. Fields shared with
    :class:`models.gan.GANConfig` mean the same thing there."""

    attribute_names: tuple[str, ...]
    cardinalities: tuple[int, ...]
    arch: str = "dcgan"  # decoder blocks, as GANConfig.arch
    image_size: int = 64
    channels: int = 3
    z_dim: int = 64
    embed_dim: int = 32  # per-attribute embedding width (decoder and encoder each have their own)
    g_width: int = 32  # decoder width, as GANConfig.g_width
    e_width: int = 32  # encoder width at full resolution; doubles per halving, capped at max_width
    max_width: int = 256

    def __post_init__(self) -> None:
        if self.e_width < 1:
            raise ValueError("e_width must be positive")
        self.decoder_config()  # GANConfig checks every field the two share, with the same messages

    def decoder_config(self) -> GANConfig:
        """The generator architecture the decoder uses: the same fields, the encoder's width as its unused d_width."""
        fields = dataclasses.asdict(self)
        fields["d_width"] = fields.pop("e_width")
        return GANConfig(**fields)


class VAEEncoder(nn.Module):
    """q(z | x, y): (B, C, H, W) images and (B, n_attributes) codes → (μ, log σ²), each (B, z_dim)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        widths = list(reversed(config.decoder_config().widths(config.e_width)))  # full resolution → 4x4
        layers: list[nn.Module] = [nn.Conv2d(config.channels, widths[0], 3, padding=1), nn.LeakyReLU(0.1)]
        for c_in, c_out in itertools.pairwise(widths):
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.1)]
        self.trunk = nn.Sequential(*layers, nn.Flatten())
        self.embeddings = nn.ModuleList(nn.Embedding(n, config.embed_dim) for n in config.cardinalities)
        hidden = widths[-1] * 16 + config.embed_dim * len(config.cardinalities)
        self.mu = nn.Linear(hidden, config.z_dim)
        self.logvar = nn.Linear(hidden, config.z_dim)

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        e = torch.cat([emb(y[:, a]) for a, emb in enumerate(self.embeddings)], dim=1)
        h = torch.cat([self.trunk(x), e], dim=1)
        return self.mu(h), self.logvar(h).clamp(-12.0, 8.0)


class ConditionalVAE(nn.Module):
    """Called like the GAN's generator: ``vae(z, y)`` decodes (B, z_dim) noise under (B, n_attributes)
    codes into (B, C, H, W) images in [-1, 1]. ``encode`` gives the posterior's (μ, log σ²)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = VAEEncoder(config)
        self.decoder = Generator(config.decoder_config())

    def encode(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:  # x: (B, C, H, W) in [-1, 1]
        return self.encoder(x, y)

    def forward(self, z: Tensor, y: Tensor) -> Tensor:  # z: (B, z_dim), y: (B, n_attributes) int64
        return self.decoder(z, y)

    @staticmethod
    def kl(mu: Tensor, logvar: Tensor) -> Tensor:
        """KL(q(z|x,y) ‖ N(0, I)) per example (Kingma & Welling 2014, appendix B)."""
        return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)

    @staticmethod
    def reparameterise(mu: Tensor, logvar: Tensor, eps: Tensor) -> Tensor:
        return mu + (0.5 * logvar).exp() * eps

    def save(self, directory: Path) -> None:
        """Write ``config.json`` and ``vae.safetensors``: encoder and decoder, so it can be trained further."""
        save_module(self, self.config, directory, "vae")

    @classmethod
    def load(cls, directory: Path, *, device: str = "cpu") -> ConditionalVAE:
        """Rebuild the VAE from its saved config and weights, in eval mode."""
        return load_state(cls(read_config(VAEConfig, directory)), directory, "vae", device=device).to(device).eval()
