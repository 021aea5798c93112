"""Conversions between image arrays, tensors and PNG bytes, shared by training, serving and evaluation.

Images travel as uint8 ``(N, H, W, C)`` arrays on disk and in PNGs, and as ``(N, C, H, W)`` tensors in
[-1, 1] inside the networks.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image


def to_tensor_images(images: np.ndarray) -> torch.Tensor:
    """(N, H, W[, C]) uint8 → (N, C, H, W) uint8 tensor (converted to [-1, 1] per batch, to save memory)."""
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"expected (N, H, W, C) uint8 images; got {images.shape} {images.dtype}")
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def to_float(batch: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) uint8 → float in [-1, 1]."""
    return batch.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] → (B, H, W, C) uint8."""
    return ((images.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def to_png(image: np.ndarray) -> bytes:
    """(H, W, C) uint8 → PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(buf, format="PNG")
    return buf.getvalue()
