"""Training loop of the attribute classifier on real catalogue images."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from engine.training.augment import translate
from models.classifier import AttributeClassifier, ClassifierConfig
from models.pixels import to_tensor_images

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ClassifierTrainConfig:
    epochs: int = 8
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    holdout: float = 0.15  # share of items kept out of training to measure accuracy
    translation: float = 0.06
    device: str = "cpu"
    max_seconds: float | None = None  # stop training after this long (the learning-rate schedule follows the time)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2 or self.lr <= 0:
            raise ValueError("epochs >= 1, batch_size >= 2 and lr > 0 are required")
        if not 0.0 <= self.holdout < 0.9:
            raise ValueError(f"holdout must be in [0, 0.9); got {self.holdout}")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"max_seconds must be positive (or None: no limit); got {self.max_seconds}")


def holdout_split(n: int, holdout: float, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(held-out rows, training rows) of n images: a random ``holdout`` share is held out.

    ``train_classifier`` draws it first from a generator seeded with its seed, so
    ``holdout_split(n, holdout, torch.Generator().manual_seed(seed))`` names the images a trained classifier
    never saw (``vitrine evaluate tagging`` measures a bundle's classifier on them)."""
    perm = torch.randperm(n, generator=rng)
    n_hold = round(n * holdout)
    return perm[:n_hold], perm[n_hold:]


def one_cycle(
    progress: float,
    max_lr: float,
    *,
    warmup: float = 0.3,
    div: float = 25.0,
    final_div: float = 1e4,
    momenta: tuple[float, float] = (0.85, 0.95),
) -> tuple[float, float]:
    """(learning rate, Adam β1) at ``progress`` in [0, 1] of a one-cycle schedule (Smith & Topin 2019) with cosine
    phases and torch's ``OneCycleLR`` defaults: the rate rises from max_lr / div to max_lr over the first
    ``warmup`` share, then falls to max_lr / div / final_div; β1 goes the other way, high → low → high."""
    p = min(max(progress, 0.0), 1.0)

    def cos_from(a: float, b: float, t: float) -> float:  # a at t = 0, b at t = 1
        return b + (a - b) / 2.0 * (1.0 + math.cos(math.pi * t))

    low, high = momenta
    if p < warmup:
        t = p / warmup
        return cos_from(max_lr / div, max_lr, t), cos_from(high, low, t)
    t = (p - warmup) / (1.0 - warmup)
    return cos_from(max_lr, max_lr / div / final_div, t), cos_from(low, high, t)


@torch.no_grad()
def predict(model: AttributeClassifier, images: torch.Tensor, *, batch_size: int = 256) -> list[np.ndarray]:
    """Per-attribute predicted codes for (N, C, H, W) uint8 or [-1, 1] float images."""
    model.eval()
    outs: list[list[np.ndarray]] = [[] for _ in model.heads]
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size]
        x = x.float().div(127.5).sub(1.0) if x.dtype == torch.uint8 else x
        for a, logits in enumerate(model(x)):
            outs[a].append(logits.argmax(1).cpu().numpy())
    return [np.concatenate(o) if o else np.empty(0, dtype=np.int64) for o in outs]


def train_classifier(
    images: np.ndarray,  # (N, H, W, C) uint8
    labels: np.ndarray,  # (N, n_attributes) int64
    config: ClassifierConfig,
    train_config: ClassifierTrainConfig,
    *,
    seed: int = 0,
    show_progress: bool = True,
) -> tuple[AttributeClassifier, dict]:
    """Train on a random (1 − holdout) share of the images; report per-attribute accuracy on the rest."""
    data = to_tensor_images(images)
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    rng = torch.Generator().manual_seed(seed)
    hold, train = holdout_split(len(data), train_config.holdout, rng)
    n_hold = len(hold)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AttributeClassifier(config)
    device = torch.device(train_config.device)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=train_config.lr, weight_decay=train_config.weight_decay)
    steps_per_epoch = max(1, len(train) // train_config.batch_size)
    total_steps = train_config.epochs * steps_per_epoch
    budget = train_config.max_seconds
    # Without a time budget, torch's OneCycleLR over the planned steps. With one, the same schedule runs on
    # progress = the larger of the steps' and the seconds' shares, so a run that time stops has still annealed.
    sched = (
        None if budget else torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=train_config.lr, total_steps=total_steps)
    )
    started = time.perf_counter()
    bar = tqdm(total=train_config.epochs * steps_per_epoch, desc="classifier", unit="step", disable=not show_progress)
    model.train()
    steps, stopped_early = 0, False
    for _ in range(train_config.epochs):
        if stopped_early:
            break
        order = train[torch.randperm(len(train), generator=rng)]
        for s in range(steps_per_epoch):
            elapsed = time.perf_counter() - started
            if budget is not None:
                if elapsed > budget:
                    stopped_early = True
                    break
                lr, beta1 = one_cycle(max(steps / total_steps, elapsed / budget), train_config.lr)
                for group in opt.param_groups:
                    group["lr"], group["betas"] = lr, (beta1, group["betas"][1])
            idx = order[s * train_config.batch_size : (s + 1) * train_config.batch_size]
            x = data[idx].float().div_(127.5).sub_(1.0)
            if train_config.translation > 0:
                x = translate(x, train_config.translation, rng)
            x, yb = x.to(device), y[idx].to(device)
            loss = sum(F.cross_entropy(logits, yb[:, a]) for a, logits in enumerate(model(x)))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            steps += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    metrics: dict = {
        "train_items": len(train),
        "holdout_items": n_hold,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if train_config.max_seconds is not None:  # only then, so bundles' metrics read as before
        metrics.update(steps=steps, stopped_early=stopped_early)
    if n_hold:
        preds = predict(model, data[hold].to(device))
        for a, name in enumerate(config.attribute_names):
            metrics[f"accuracy_{name}"] = float((preds[a] == y[hold, a].numpy()).mean())
    logger.info(
        "trained attribute classifier in %.1fs: %s",
        metrics["seconds"],
        ", ".join(f"{k}={v:.3f}" for k, v in metrics.items() if k.startswith("accuracy")),
    )
    return model, metrics


@torch.no_grad()
def embed_images(
    net: AttributeClassifier, images: np.ndarray, *, batch_size: int = 512, device: str = "cpu"
) -> np.ndarray:
    """(N, feature_dim) raw penultimate features of (N, S, S, C) uint8 images."""
    net.eval()
    data = to_tensor_images(images)
    out = [
        net.embed(data[s : s + batch_size].to(device).float().div(127.5).sub(1.0)).cpu().numpy()
        for s in range(0, len(data), batch_size)
    ]
    return np.concatenate(out).astype(np.float64) if out else np.empty((0, net.config.feature_dim))
