"""A small residual network for super-resolution (×2, ×4) and restoration (×1): one class, three uses.

The architecture is EDSR-baseline's shape (Lim et al., "Enhanced Deep Residual Networks for Single Image
Super-Resolution", CVPRW 2017) cut down to ESPCN/FSRCNN's cost so that a 64 → 256 px image takes a few
milliseconds on one CPU thread: a 3×3 head, ``blocks`` residual blocks without batch norm (conv, ReLU, conv,
plus the input), a global skip around the body, and a sub-pixel (pixel-shuffle) output layer (Shi et al., ESPCN,
CVPR 2016) that predicts the ``scale²`` sub-positions of every low-resolution pixel at once, so every
convolution runs at the low resolution.

The network predicts a residual over bicubic interpolation of its input (Keys' kernel with a = −0.5, the kernel
of MATLAB's ``imresize`` and Pillow's BICUBIC, the SR literature's baseline), computed by a fixed grouped 5×5
convolution (``skip``, a buffer: learning it too let Adam's first steps wreck the interpolation). The output layer
starts at zero, so an untrained network is bicubic interpolation and training starts from the baseline. With
``scale == 1`` the skip is the identity and the network is a residual restorer (denoising, JPEG deblocking,
deblurring), the same blocks at full resolution.

Images are (B, 3, H, W) float tensors in [0, 1]; the output is (B, 3, scale·H, scale·W), not clamped (callers
that make pixels clamp it: :func:`run_net`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.io import load_state, read_config, save_module

#: The nets an SR component holds, by role, with their scale factors.
ROLES: dict[str, int] = {"x2": 2, "x4": 4, "restore": 1}
_SKIP_TAPS = 5  # a bicubic output pixel at ×2 or ×4 reads input pixels at offsets -2..2


@dataclass(frozen=True, kw_only=True)
class SRConfig:
    """Architecture of one SR (or restoration) network; travels inside every saved net."""

    scale: int  # 1 (restoration), 2 or 4
    width: int = 16  # channels of the head and of every residual block
    blocks: int = 3  # residual blocks

    def __post_init__(self) -> None:
        if self.scale not in (1, 2, 4):
            raise ValueError(f"scale must be 1 (restoration), 2 or 4; got {self.scale}")
        if self.width < 4:
            raise ValueError(f"width must be at least 4; got {self.width}")
        if self.blocks < 0:
            raise ValueError(f"blocks must be >= 0; got {self.blocks}")


def keys_cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys' cubic convolution kernel (IEEE TASSP 1981); a = -0.5 is the bicubic of MATLAB and Pillow."""
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def interpolation_taps(scale: int) -> np.ndarray:
    """(scale, 5) weights of input offsets -2..2 for each of the ``scale`` output sub-positions of a pixel.

    Output pixel ``scale·p + k`` has its centre at input coordinate p + (k + 0.5)/scale - 0.5 (pixel centres at
    integers), so it lies d = (k + 0.5)/scale - 0.5 from input pixel p; tap t weighs K(t - d), normalised to sum
    to one as Pillow does. For scale 1 this is the identity, [0, 0, 1, 0, 0].
    """
    t = np.arange(_SKIP_TAPS) - _SKIP_TAPS // 2
    d = (np.arange(scale) + 0.5) / scale - 0.5
    w = keys_cubic(t[None, :] - d[:, None])
    return w / w.sum(axis=1, keepdims=True)


class ResidualBlock(nn.Module):
    """EDSR's block: conv 3×3, ReLU, conv 3×3, plus the input (no batch norm)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, width, H, W)
        return x + self.conv2(F.relu(self.conv1(x)))


class SRNet(nn.Module):
    """(B, 3, H, W) in [0, 1] → (B, 3, scale·H, scale·W): a learned residual over bicubic (or identity)."""

    def __init__(self, config: SRConfig) -> None:
        super().__init__()
        self.config = config
        s, w = config.scale, config.width
        self.head = nn.Conv2d(3, w, 3, padding=1)
        self.body = nn.Sequential(*(ResidualBlock(w) for _ in range(config.blocks)))
        self.tail = nn.Conv2d(w, 3 * s * s, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)  # type: ignore[arg-type]  # the conv has a bias
        taps = torch.as_tensor(interpolation_taps(s), dtype=torch.float32)  # (s, 5)
        kernel = taps[:, None, :, None] * taps[None, :, None, :]  # (s_y, s_x, 5, 5): separable bicubic
        # channel c·s² + k_y·s + k_x of the output is colour c at sub-position (k_y, k_x) (pixel shuffle)
        self.skip: Tensor
        self.register_buffer("skip", kernel.reshape(s * s, 1, _SKIP_TAPS, _SKIP_TAPS).repeat(3, 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:  # x: (B, 3, H, W)
        features = self.head(x)
        residual = self.tail(self.body(features) + features)
        pad = _SKIP_TAPS // 2
        base = F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="replicate"), self.skip, groups=3)
        out = residual + base  # (B, 3·s², H, W)
        return F.pixel_shuffle(out, self.config.scale) if self.config.scale > 1 else out

    def save(self, directory: Path) -> None:
        """Write ``config.json`` and ``net.safetensors`` into ``directory``."""
        save_module(self, self.config, directory, "net")

    @classmethod
    def load(cls, directory: Path, *, device: str = "cpu") -> SRNet:
        """Rebuild the net from its saved config and weights, in eval mode, its weights channels-last (oneDNN's
        convolutions skip a layout change per layer then: about 30 % faster on one CPU thread)."""
        net = load_state(cls(read_config(SRConfig, directory)), directory, "net", device=device)
        return net.to(device).to(memory_format=torch.channels_last).eval()  # type: ignore[call-overload]


@torch.inference_mode()
def run_net(net: SRNet, images: np.ndarray, *, batch_size: int = 16) -> np.ndarray:
    """(N, H, W, 3) uint8 → (N, s·H, s·W, 3) uint8 through ``net`` (clamped and rounded)."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected (N, H, W, 3) uint8 images; got {images.shape} {images.dtype}")
    out = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size].transpose(0, 3, 1, 2)))
        x = x.float().div_(255.0).contiguous(memory_format=torch.channels_last)
        y = net(x).clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)
        out.append(y.permute(0, 2, 3, 1).numpy())
    s = net.config.scale
    return np.concatenate(out) if out else np.zeros((0, images.shape[1] * s, images.shape[2] * s, 3), np.uint8)


@dataclass(kw_only=True)
class SRComponent:
    """What a bundle's ``sr/`` folder holds: one net per role of :data:`ROLES` (``x2/``, ``x4/``, ``restore/``)."""

    nets: dict[str, SRNet]

    def __post_init__(self) -> None:
        missing = sorted(set(ROLES) - set(self.nets))
        if missing or set(self.nets) - set(ROLES):
            raise ValueError(f"an SR component holds exactly the nets {sorted(ROLES)}; missing {missing}")
        for role, net in self.nets.items():
            if net.config.scale != ROLES[role]:
                raise ValueError(f"the {role} net has scale {net.config.scale}, expected {ROLES[role]}")

    def save(self, directory: Path) -> None:
        for role, net in self.nets.items():
            net.save(Path(directory) / role)

    @classmethod
    def load(cls, directory: Path, *, device: str = "cpu") -> SRComponent:
        directory = Path(directory)
        missing = [role for role in ROLES if not (directory / role).is_dir()]
        if missing:
            raise FileNotFoundError(f"{directory} lacks {', '.join(f'{m}/' for m in missing)} (an SR component)")
        return cls(nets={role: SRNet.load(directory / role, device=device) for role in ROLES})
