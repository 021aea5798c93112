"""The loop the generator trainers share: step and time budgets, a progress bar, history, checkpoints, resume.

A trainer (``engine.training.gan``, ``engine.training.vae``) builds its networks and optimisers and says what
one step does, as a :class:`GeneratorTraining`; :func:`run_training` runs the steps. Every random draw of a
step (batches, noise, augmentation) comes from one ``torch.Generator`` seeded with the run's seed and saved
in each checkpoint with the networks and optimisers, so a resumed run continues the same random stream and
ends with the same weights as an uninterrupted one. A checkpoint refuses to be resumed by another kind of
model, another architecture, seed, training settings or data.
"""

from __future__ import annotations

import hashlib
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from engine.training.distributed import SINGLE_PROCESS, Ranks, replicate
from models.io import config_from_dict, config_to_dict
from models.pixels import to_tensor_images

logger = logging.getLogger(__name__)

CHECKPOINT_SCHEMA = 2
# What a resumed run may change: how long it trains, how often it saves and logs, and where it runs.
RESUMABLE = frozenset({"steps", "max_seconds", "checkpoint_every", "log_every", "device"})


@dataclass(frozen=True, kw_only=True)
class LoopConfig:
    """The shared loop's settings; each trainer's config adds its own (learning rates, loss weights)."""

    steps: int = 2000
    batch_size: int = 64
    max_seconds: float | None = None  # stop early once training has run this long (the run records it)
    checkpoint_every: int = 0  # steps between checkpoints; 0 writes only the final one (if a folder is given)
    log_every: int = 50  # steps per history record: each record is the mean over the steps since the last
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 2:
            raise ValueError("steps must be >= 1 and batch_size >= 2")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError("max_seconds must be positive or None")
        if self.checkpoint_every < 0 or self.log_every < 1:
            raise ValueError("checkpoint_every must be >= 0 and log_every >= 1")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'cpu' or 'cuda[:n]'; got {self.device!r}")


@dataclass(frozen=True, kw_only=True)
class TrainingImages:
    """A generator's training data: images and their attribute codes, checked against the model's config."""

    images: torch.Tensor  # (N, C, H, W) uint8
    conditions: torch.Tensor  # (N, n_attributes) int64

    @classmethod
    def checked(
        cls,
        images: np.ndarray,  # (N, H, W, C) uint8
        conditions: np.ndarray,  # (N, n_attributes) int64 codes
        config: Any,  # the model's config: cardinalities, channels, image_size
        *,
        model: str,  # the model's name in messages, e.g. "GAN"
    ) -> TrainingImages:
        data = to_tensor_images(images)
        conds = torch.as_tensor(np.asarray(conditions, dtype=np.int64))
        if len(data) != len(conds) or conds.ndim != 2 or conds.shape[1] != len(config.cardinalities):
            raise ValueError(
                f"{len(data)} images need (N, {len(config.cardinalities)}) conditions; got {tuple(conds.shape)}"
            )
        if data.shape[1] != config.channels or data.shape[2] != config.image_size:
            raise ValueError(
                f"images are {tuple(data.shape[1:])} but the {model} is configured for "
                f"{config.channels}x{config.image_size}x{config.image_size}"
            )
        if (conds < 0).any() or (conds >= torch.tensor(config.cardinalities)).any():
            raise ValueError("conditions hold codes outside [0, cardinality); encode them with AttributeEncoder")
        return cls(images=data, conditions=conds)

    def digest(self) -> str:
        """SHA-256 of the images and codes: a checkpoint resumes only on the data it was trained on."""
        h = hashlib.sha256()
        for t in (self.images, self.conditions):
            array = np.ascontiguousarray(t.numpy())
            h.update(f"{array.dtype}{array.shape}".encode())
            h.update(array.data.cast("B"))
        return h.hexdigest()


class GeneratorTraining(ABC):
    """One generator's part of the shared loop: the networks and optimisers a checkpoint holds, and one step.

    A subclass builds its networks (from the seed, without touching the global RNG) and optimisers in its
    constructor, after this one's, and names them in :meth:`networks` and :meth:`optimisers`.
    """

    kind: ClassVar[str]  # "gan" or "vae": names the bar and the checkpoint, so one is never resumed as the other
    metrics: ClassVar[tuple[str, ...]]  # the figures :meth:`step` returns, averaged into each history record
    shown: ClassVar[tuple[tuple[str, str], ...]]  # the figures on the progress bar, each with its format
    # Whether a time-budget stop between two records adds a record of the steps since the last one.
    records_stopped_tail: ClassVar[bool] = True
    # The networks a distributed run replicates over its processes (DDP averages their gradients); none by
    # default, and a trainer with none refuses to run distributed.
    distributable: ClassVar[tuple[str, ...]] = ()

    def __init__(self, data: TrainingImages, model_config: Any, train_config: LoopConfig, *, seed: int) -> None:
        self.data = data
        self.model_config = model_config
        self.train_config = train_config
        self.seed = seed
        self.device = torch.device(train_config.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device on this machine")
        self.ranks = SINGLE_PROCESS  # set by :meth:`distribute`
        self._replicas: dict[str, nn.Module] = {}

    @abstractmethod
    def networks(self) -> dict[str, nn.Module]:
        """The networks a checkpoint holds, by name."""

    @abstractmethod
    def optimisers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimisers a checkpoint holds, by name."""

    @abstractmethod
    def step(self, done: int, rng: torch.Generator) -> dict[str, float]:
        """One update after ``done`` steps, drawing every random number from ``rng``; returns its ``metrics``."""

    def extra_state(self) -> dict[str, Any]:
        """Further state a checkpoint holds, beyond networks, optimisers and the random stream (for instance a
        private run's privacy accountant); none by default."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""
        del state  # nothing beyond the networks, optimisers and random stream by default

    # ---------------------------------------------------------------- distributed runs (engine.training.distributed)

    def distribute(self, ranks: Ranks) -> None:
        """Train as one of ``ranks``' processes: each step takes its rows of the global batch (``ranks.rows``)
        and calls the :attr:`distributable` networks through :meth:`replica`. ``SINGLE_PROCESS`` undoes it."""
        if ranks.distributed and not self.distributable:
            raise ValueError(f"{type(self).__name__} runs in one process only; train it without --distributed")
        ranks.rows(self.train_config.batch_size)  # refuses a batch that does not split evenly
        networks = self.networks()
        self._replicas = {name: replicate(networks[name], ranks, self.device) for name in self.distributable}
        self.ranks = ranks

    def replica(self, name: str) -> nn.Module:
        """The network ``name`` as a step calls it to train it: DDP-wrapped in a distributed run."""
        replica = self._replicas.get(name)
        return replica if replica is not None else self.networks()[name]


@dataclass(kw_only=True)
class LoopResult:
    steps: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False


def run_training(
    training: GeneratorTraining,
    *,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    show_progress: bool = True,
    ranks: Ranks = SINGLE_PROCESS,
) -> LoopResult:
    """Run ``training``'s steps until ``steps`` or ``max_seconds``, whichever comes first; with ``resume``,
    continue from ``checkpoint_dir``'s checkpoint. With a ``checkpoint_dir``, a checkpoint is written every
    ``checkpoint_every`` steps and at the end. With ``ranks`` of several processes, this process trains on its
    share of each global batch; only rank 0 writes checkpoints and shows the bar, and all stop together."""
    config = training.train_config
    rng = torch.Generator().manual_seed(training.seed)
    digest = training.data.digest() if checkpoint_dir is not None else None
    step, elapsed = 0, 0.0
    history: list[dict] = []
    if resume:
        step, elapsed, history = _resume(training, rng, checkpoint_dir, digest)
    training.distribute(ranks)  # after the resume: DDP starts from the loaded weights

    def checkpoint() -> None:
        if checkpoint_dir is not None and ranks.is_main:
            _save(Path(checkpoint_dir), training, step=step, seconds=elapsed, rng=rng, history=history, data=digest)

    stopped_early = False
    running, summed = dict.fromkeys(training.metrics, 0.0), 0  # summed < log_every after a resume between records
    name = training.kind.upper()
    bar = tqdm(total=config.steps, initial=step, desc=name, unit="step", disable=not (show_progress and ranks.is_main))
    t0 = time.perf_counter() - elapsed
    while step < config.steps:
        figures = training.step(step, rng)
        step += 1
        for key in running:
            running[key] += figures[key]
        summed += 1
        bar.update(1)
        elapsed = time.perf_counter() - t0
        if step % config.log_every == 0 or step == config.steps:
            history.append(_record(step, elapsed, ranks.mean(running), summed))
            running, summed = dict.fromkeys(running, 0.0), 0
            bar.set_postfix({key: f"{history[-1][key]:{fmt}}" for key, fmt in training.shown})
        if config.checkpoint_every and step % config.checkpoint_every == 0:
            checkpoint()
        if config.max_seconds is not None and ranks.any(elapsed >= config.max_seconds):
            stopped_early = step < config.steps
            break
    bar.close()
    if training.records_stopped_tail and summed and step < config.steps:
        history.append(_record(step, elapsed, ranks.mean(running), summed))
    checkpoint()
    training.distribute(SINGLE_PROCESS)  # plain networks again, for whoever uses them next
    if stopped_early:
        logger.warning(
            "%s training stopped at step %d of %d: max_seconds=%s reached", name, step, config.steps, config.max_seconds
        )
    logger.info("trained %s: %d steps in %.1fs", name, step, elapsed)
    return LoopResult(steps=step, seconds=elapsed, history=history, stopped_early=stopped_early)


def _record(step: int, elapsed: float, running: dict[str, float], summed: int) -> dict:
    return {"step": step, "seconds": round(elapsed, 2), **{key: v / summed for key, v in running.items()}}


def checkpoint_path(directory: Path) -> Path:
    return Path(directory) / "checkpoint.pt"


def _save(
    directory: Path,
    training: GeneratorTraining,
    *,
    step: int,
    seconds: float,
    rng: torch.Generator,
    history: list[dict],
    data: str | None,
) -> None:
    """Everything a resumed run needs to continue exactly, and what it must match.

    Only this loop reads the file (never the API, which loads the safetensors bundle), so it is in torch's
    own format; it is written beside and then renamed, so a crash never leaves half a checkpoint.
    """
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / "checkpoint.pt.tmp"
    torch.save(
        {
            "schema_version": CHECKPOINT_SCHEMA,
            "kind": training.kind,
            "step": step,
            "seconds": seconds,
            "seed": training.seed,
            "config": config_to_dict(training.model_config),
            "train_config": config_to_dict(training.train_config),
            "data": data,
            "networks": {name: m.state_dict() for name, m in training.networks().items()},
            "optimisers": {name: o.state_dict() for name, o in training.optimisers().items()},
            "rng": rng.get_state(),
            "history": history,
            "extra": training.extra_state(),
        },
        tmp,
    )
    tmp.replace(checkpoint_path(directory))


def _from_schema_1(state: dict, training: GeneratorTraining) -> dict:
    """A checkpoint of schema 1 (written before the trainers shared this loop) in schema 2's layout.

    Schema 1 kept each network and optimiser at the top level, under the names the trainers still use, and
    recorded no data digest; the GAN's had no ``kind`` and kept its model config under ``gan_config``.
    """
    kind = state.get("kind", "gan")
    if kind != training.kind:
        return {"schema_version": 1, "kind": kind}  # refused by the caller
    return {
        "schema_version": CHECKPOINT_SCHEMA,
        "kind": kind,
        **{key: state[key] for key in ("step", "seconds", "seed", "train_config", "rng", "history")},
        "config": state["gan_config"] if kind == "gan" else state["config"],
        "data": None,
        "networks": {name: state[name] for name in training.networks()},
        "optimisers": {name: state[name] for name in training.optimisers()},
    }


def _added_settings() -> dict[str, Any]:
    """Settings added to a trainer's config after runs were first saved, each with the value every run saved
    before it had: such a run resumes as it was trained, without privacy and with one discriminator step."""
    from engine.training.privacy import PrivacyConfig

    return {"privacy": config_to_dict(PrivacyConfig()), "d_steps": 1}


def changed_settings(saved: dict, config: LoopConfig) -> list[str]:
    """The settings of ``config`` that differ from ``saved`` (a config as a dict) and a resumed run may not
    change, each as "train_config.NAME (old → new)". A setting ``saved`` predates counts as its old value."""
    saved = {**_added_settings(), **saved}
    return [
        f"train_config.{key} ({saved.get(key)!r} → {value!r})"
        for key, value in config_to_dict(config).items()
        if key not in RESUMABLE and saved.get(key) != value
    ]


def _resume(
    training: GeneratorTraining, rng: torch.Generator, directory: Path | None, digest: str | None
) -> tuple[int, float, list[dict]]:
    """Load the checkpoint into ``training``'s networks and optimisers and ``rng``; return its step, seconds
    and history. Refuses a checkpoint of another kind, architecture, seed, training settings or data."""
    if directory is None or not checkpoint_path(directory).is_file():
        raise FileNotFoundError(f"resume asked for, but there is no checkpoint.pt in {directory}")
    path = checkpoint_path(directory)
    state = torch.load(path, map_location=training.device, weights_only=False)
    if state.get("schema_version") == 1:
        state = _from_schema_1(state, training)
    name = training.kind.upper()
    if state.get("schema_version") != CHECKPOINT_SCHEMA or state.get("kind") != training.kind:
        raise ValueError(
            f"{path} is not a {name} checkpoint of schema {CHECKPOINT_SCHEMA} "
            f"(kind {state.get('kind')!r}, schema {state.get('schema_version')})"
        )
    config_cls = type(training.model_config)
    if config_from_dict(config_cls, state["config"], source=str(path)) != training.model_config:
        raise ValueError(f"the checkpoint was trained with a different {config_cls.__name__}; resume with the same one")
    differs = changed_settings(state["train_config"], training.train_config)
    if state["seed"] != training.seed:
        differs.insert(0, f"seed ({state['seed']!r} → {training.seed!r})")
    if state["data"] is None:
        logger.warning("%s records no digest of its training data (schema 1): the data cannot be checked", path)
    elif state["data"] != digest:
        differs.append("the training images or their conditions")
    if differs:
        raise ValueError(
            f"resuming {path} would continue the run with other settings: {', '.join(differs)}. Resume with the "
            f"run's own seed, data and settings (only {', '.join(sorted(RESUMABLE))} may change), or start anew."
        )
    for key, network in training.networks().items():
        network.load_state_dict(state["networks"][key])
    for key, optimiser in training.optimisers().items():
        optimiser.load_state_dict(state["optimisers"][key])
    training.load_extra_state(state.get("extra", {}))
    rng.set_state(state["rng"].cpu())  # a CPU generator's state, whatever map_location moved it to
    logger.info("resumed %s training at step %d from %s", name, state["step"], directory)
    return state["step"], state["seconds"], state["history"]
