"""Data-parallel generator training over the processes that ``torchrun`` starts (torch DDP): gloo on CPU,
NCCL on GPU.

A distributed step is the step one process takes on the same global batch, split over the processes:

* **The same random draws.** Every process holds the run's one seeded ``torch.Generator`` and draws the whole
  global batch from it (image indices, noise, augmentation offsets), then keeps its own rows
  (:meth:`Ranks.rows`). The streams stay in step, and a checkpoint's random state is every process's.
* **The same gradients.** Each process's loss is the mean over its rows; DDP averages the gradients, which
  with equal shares is the gradient of the mean over the global batch.
* **The same BatchNorm statistics.** The generator's (conditional) BatchNorm normalises by the global batch's
  mean and variance (``models.sync_batchnorm``; ``torch.nn.SyncBatchNorm`` refuses CPU tensors).
* **The same spectral norms.** The discriminator's power-iteration vectors are buffers: every process
  updates them identically, and DDP broadcasts rank 0's at each forward besides.

Only rank 0 writes checkpoints and run files and shows a progress bar; history figures are the mean over
processes, which is the global batch's mean. A run's checkpoint does not depend on the number of processes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from models.sync_batchnorm import local_batchnorm, sync_batchnorm

logger = logging.getLogger(__name__)

LAUNCH = "torchrun --nproc-per-node N -m engine.cli train generator --distributed ..."


@dataclass(frozen=True, kw_only=True)
class Ranks:
    """This process's place in a training run: its rank among ``world_size`` processes, and the backend
    their collectives use. The default is a run of one process, where every method is a no-op."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # the process's number on its machine: its GPU under NCCL
    backend: str = "gloo"  # "gloo" (CPU tensors) or "nccl" (CUDA tensors)

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size or self.local_rank < 0:
            raise ValueError(f"rank {self.rank} of {self.world_size} (local {self.local_rank}) is not a valid place")
        if self.backend not in ("gloo", "nccl"):
            raise ValueError(f"backend must be 'gloo' or 'nccl'; got {self.backend!r}")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes files, logs at INFO and shows progress (rank 0)."""
        return self.rank == 0

    def rows(self, batch_size: int) -> slice:
        """This process's rows of a global batch of ``batch_size``: equal, consecutive shares."""
        if batch_size % self.world_size:
            raise ValueError(
                f"a batch of {batch_size} does not split evenly over {self.world_size} processes: choose a batch "
                f"size that is a multiple of {self.world_size}, or run another number of processes"
            )
        share = batch_size // self.world_size
        return slice(self.rank * share, (self.rank + 1) * share)

    def mean(self, figures: dict[str, float]) -> dict[str, float]:
        """Each figure averaged over the processes (every process must call this at the same point)."""
        if not self.distributed or not figures:
            return dict(figures)
        values = torch.tensor(list(figures.values()), dtype=torch.float64, device=self._device())
        dist.all_reduce(values)
        return dict(zip(figures, (values / self.world_size).tolist(), strict=True))

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` holds in any process, so that all stop together (a collective, like :meth:`mean`)."""
        if not self.distributed:
            return flag
        value = torch.tensor([float(flag)], device=self._device())
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def _device(self) -> torch.device:  # where this backend's collectives take their tensors
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")


SINGLE_PROCESS = Ranks()


def ranks_from_env(env: Mapping[str, str], *, backend: str) -> Ranks:
    """The place ``torchrun`` gave this process, from its ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``."""
    missing = [key for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if key not in env]
    if missing:
        raise ValueError(
            f"--distributed needs the environment torchrun sets ({', '.join(missing)} missing): start the "
            f"processes with `{LAUNCH}`"
        )
    try:
        rank, world_size, local_rank = (int(env[key]) for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except ValueError as exc:
        raise ValueError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers: {exc}") from exc
    return Ranks(rank=rank, world_size=world_size, local_rank=local_rank, backend=backend)


@contextmanager
def process_group(device: str, env: Mapping[str, str], *, init_method: str = "env://") -> Iterator[tuple[Ranks, str]]:
    """Join the process group of the run ``torchrun`` started, for as long as the block runs.

    ``device`` is the run's: "cpu" trains over gloo; "cuda" over NCCL, each process on the GPU its
    ``LOCAL_RANK`` numbers. Yields this process's :class:`Ranks` and the device it trains on.
    """
    if device not in ("cpu", "cuda"):
        raise ValueError(
            f"--distributed trains on 'cpu' (gloo) or 'cuda' (NCCL, one GPU per process, numbered by LOCAL_RANK); "
            f"got --device {device!r}"
        )
    backend, own_device = ("gloo", "cpu") if device == "cpu" else ("nccl", "cuda")
    ranks = ranks_from_env(env, backend=backend)
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device on this machine")
        own_device = f"cuda:{ranks.local_rank}"
        torch.cuda.set_device(ranks.local_rank)
    dist.init_process_group(backend, init_method=init_method, rank=ranks.rank, world_size=ranks.world_size)
    logger.info("process %d of %d joined the %s group on %s", ranks.rank, ranks.world_size, backend, own_device)
    try:
        yield ranks, own_device
    finally:
        dist.destroy_process_group()


def replicate(module: nn.Module, ranks: Ranks, device: torch.device) -> nn.Module:
    """``module`` as a distributed step calls it: with global BatchNorm statistics and wrapped in DDP, which
    averages its gradients over the processes; in one process, ``module`` itself with local BatchNorm.

    The returned module shares ``module``'s parameters and buffers; calling it with ``ranks`` of one
    process undoes the BatchNorm swap, so the trained network is a plain one again.
    """
    if not ranks.distributed:
        return local_batchnorm(module)
    device_ids = [device.index if device.index is not None else ranks.local_rank] if device.type == "cuda" else None
    return DistributedDataParallel(sync_batchnorm(module), device_ids=device_ids)
