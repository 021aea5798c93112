"""DiffAugment (Zhao et al., NeurIPS 2020): the same differentiable augmentation on real and fake images
before the discriminator, so a small catalogue does not let D memorise it.

Only translation and cutout: colour is a condition of the generator, so colour jitter would teach it
that colour does not matter.

In a distributed run each process holds some ``rows`` of a global batch of ``batch_size`` images: the
offsets are drawn for the whole batch and the process keeps its rows' ones, so every process's random
stream stays in step and the batch is augmented as one process would augment it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _offsets(low: int, high: int, x: Tensor, generator: torch.Generator, batch_size: int | None, rows: slice) -> Tensor:
    """Integer offsets in [low, high) for ``rows`` of a batch of ``batch_size`` (default: x's), on x's device."""
    n = x.shape[0] if batch_size is None else batch_size
    return torch.randint(low, high, (n, 1, 1), generator=generator, device="cpu")[rows].to(x.device)  # (B, 1, 1)


def translate(
    x: Tensor,  # (B, C, H, W)
    ratio: float,
    generator: torch.Generator,
    *,
    batch_size: int | None = None,
    rows: slice = slice(None),
) -> Tensor:
    """Shift each image by up to ``ratio`` of its size, filling with zeros (Zhao et al., Alg. 'translation')."""
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = _offsets(-sh, sh + 1, x, generator, batch_size, rows)
    dx = _offsets(-sw, sw + 1, x, generator, batch_size, rows)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    gy = torch.clamp(gy[None] + dy + 1, 0, h + 1)
    gx = torch.clamp(gx[None] + dx + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    idx = (gy * (w + 2) + gx).view(b, 1, h * w).expand(-1, x.shape[1], -1)
    return padded.flatten(2).gather(2, idx).view_as(x)


def cutout(
    x: Tensor,  # (B, C, H, W)
    ratio: float,
    generator: torch.Generator,
    *,
    batch_size: int | None = None,
    rows: slice = slice(None),
) -> Tensor:
    """Zero one square of side ``ratio`` × size at a random place in each image."""
    _, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = _offsets(0, h + (1 - ch % 2), x, generator, batch_size, rows)
    ox = _offsets(0, w + (1 - cw % 2), x, generator, batch_size, rows)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    inside = (
        (gy[None] >= oy - ch // 2)
        & (gy[None] < oy - ch // 2 + ch)
        & (gx[None] >= ox - cw // 2)
        & (gx[None] < ox - cw // 2 + cw)
    )
    return x * (~inside).unsqueeze(1).to(x.dtype)


def diff_augment(
    x: Tensor,  # (B, C, H, W): ``rows`` of a batch of ``batch_size`` (default: all of x)
    generator: torch.Generator,
    *,
    translation: float = 0.125,
    cutout_ratio: float = 0.5,
    batch_size: int | None = None,
    rows: slice = slice(None),
) -> Tensor:
    if translation > 0:
        x = translate(x, translation, generator, batch_size=batch_size, rows=rows)
    if cutout_ratio > 0:
        x = cutout(x, cutout_ratio, generator, batch_size=batch_size, rows=rows)
    return x
