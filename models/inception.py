"""torchvision's Inception v3, for the standard FID, only where its weights already lie on this machine.

Vitrine never downloads weights. ``local_inception_weights`` says whether torchvision and its ImageNet
Inception v3 checkpoint are present (and why not, when they are not); the generator harness then
reports "standard FID: not available" instead of failing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

# File names torchvision's weight enums download to (torch hub's checkpoints folder).
INCEPTION_WEIGHT_FILES = ("inception_v3_google-0cc3c7bd.pth", "inception_v3_google-1a9a5a14.pth")


def local_inception_weights(hub_dir: Path | None = None) -> tuple[Path | None, str]:
    """(path to local Inception v3 weights, "") or (None, the reason they cannot be used)."""
    if importlib.util.find_spec("torchvision") is None:
        return None, "torchvision is not installed"
    folder = Path(hub_dir or torch.hub.get_dir()) / "checkpoints"
    for name in INCEPTION_WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name, ""
    return None, f"no local Inception weights (looked for {', '.join(INCEPTION_WEIGHT_FILES)} in {folder})"


def load_inception(weights: Path, *, device: str = "cpu") -> nn.Module:
    """Inception v3 whose output is the 2048-d pool features (the FID feature space), in eval mode.

    Input: (B, 3, 299, 299) images normalised with the ImageNet mean and std (``transform_input``
    converts them to the normalisation the original weights were trained with, as torchvision does).
    """
    from torchvision.models import inception_v3

    net = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=True)
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    net.fc = nn.Identity()
    return net.to(device).eval()
