"""DiffAugment (Zhao et al., NeurIPS 2020): the same differentiable augmentation on real and fake images
before the discriminator, so a small catalogue does not let D memorise it.

Only translation and cutout: colour is a condition of the generator, so colour jitter would teach it
that colour does not matter.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def translate(x: Tensor, ratio: float, generator: torch.Generator) -> Tensor:  # x: (B, C, H, W)
    """Shift each image by up to ``ratio`` of its size, filling with zeros (Zhao et al., Alg. 'translation')."""
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (b, 1, 1), generator=generator, device="cpu").to(x.device)
    dx = torch.randint(-sw, sw + 1, (b, 1, 1), generator=generator, device="cpu").to(x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    gy = torch.clamp(gy[None] + dy + 1, 0, h + 1)
    gx = torch.clamp(gx[None] + dx + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    idx = (gy * (w + 2) + gx).view(b, 1, h * w).expand(-1, x.shape[1], -1)
    return padded.flatten(2).gather(2, idx).view_as(x)


def cutout(x: Tensor, ratio: float, generator: torch.Generator) -> Tensor:
    """Zero one square of side ``ratio`` × size at a random place in each image."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), generator=generator, device="cpu").to(x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), generator=generator, device="cpu").to(x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    inside = (
        (gy[None] >= oy - ch // 2)
        & (gy[None] < oy - ch // 2 + ch)
        & (gx[None] >= ox - cw // 2)
        & (gx[None] < ox - cw // 2 + cw)
    )
    return x * (~inside).unsqueeze(1).to(x.dtype)


def diff_augment(
    x: Tensor, generator: torch.Generator, *, translation: float = 0.125, cutout_ratio: float = 0.5
) -> Tensor:
    if translation > 0:
        x = translate(x, translation, generator)
    if cutout_ratio > 0:
        x = cutout(x, cutout_ratio, generator)
    return x
