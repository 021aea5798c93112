"""User-level DP-SGD for the visual preference model f (``engine.training.visual``).

One unit is one shopper with every interaction they have. Each step takes a Poisson sample of shoppers (rate
batch_size / n_shoppers); each sampled shopper contributes ``pairs_per_shopper`` (liked image, random catalogue
image) pairs drawn from their own interactions, and their BPR loss is the mean over those pairs, so one
shopper's whole contribution to a step is one clipped gradient (McMahan et al., ICLR 2018, apply the same
idea to user-level DP language models). The negatives come from the catalogue, which is public.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from engine.training.privacy import PrivateStep, poisson_sample
from models.visual import VisualEncoder

if TYPE_CHECKING:
    from engine.training.visual import PreferencePairs, VisualTrainConfig


def fit_private(
    enc: VisualEncoder,
    opt: torch.optim.Optimizer,
    pairs: PreferencePairs,
    feats: torch.Tensor,  # (n_items, feature_dim)
    codes: torch.Tensor,  # (n_items, n_attributes) int64
    uf: torch.Tensor,  # (n_users, d) the shoppers' fixed vectors
    target: torch.Tensor,  # (n_items, d) item factors, for the optional regression term
    v_scale: float,
    config: VisualTrainConfig,
    *,
    seed: int,
    progress: bool = True,
) -> dict:
    """Train ``enc`` in place with DP-SGD over shoppers; returns the privacy record (ε spent at δ)."""
    order = np.argsort(pairs.users, kind="stable")
    liked = pairs.items[order]
    shoppers, starts, counts = np.unique(pairs.users[order], return_index=True, return_counts=True)
    private = PrivateStep(
        enc,
        opt,
        config.privacy,
        n_units=len(shoppers),
        batch_size=config.batch_size,
        steps=config.steps,
        unit="shopper",
        seed=seed + 1,
    )
    rng = np.random.default_rng(seed)
    sampler = torch.Generator().manual_seed(seed)
    m = config.pairs_per_shopper
    attrs = config.use_attributes
    bar = tqdm(range(config.steps), desc="visual encoder (private)", unit="step", disable=not progress)
    for step in bar:
        rows = poisson_sample(len(shoppers), private.sample_rate, sampler).numpy()
        if len(rows) == 0:  # nothing released; counted all the same
            private.step(took_step=False)
            continue
        # m of each sampled shopper's own liked items (with replacement) and m random catalogue images
        offsets = (rng.random((len(rows), m)) * counts[rows][:, None]).astype(np.int64)
        i = torch.from_numpy(liked[starts[rows][:, None] + offsets])  # (B, m)
        j = torch.from_numpy(pairs.pool[rng.integers(0, len(pairs.pool), (len(rows), m))])  # (B, m)
        u = torch.from_numpy(shoppers[rows])
        fi = private.module(feats[i], codes[i] if attrs else None)  # (B, m, d)
        fj = private.module(feats[j], codes[j] if attrs else None)
        loss = -F.logsigmoid((uf[u][:, None, :] * (fi - fj)).sum(-1)).mean()
        if config.regression_weight:
            loss = loss + config.regression_weight * (fi - target[i]).pow(2).sum(-1).mean() / v_scale
        loss.backward()
        private.step()
        if step % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", eps=f"{private.epsilon():.2f}")
    private.close()
    return private.record()
