"""Distributed GAN training (engine.training.distributed): two gloo processes on CPU take the step one process
takes on the same global batch, and what cannot run distributed says so."""

from __future__ import annotations

import copy
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from engine.training.distributed import SINGLE_PROCESS, Ranks, process_group, ranks_from_env
from engine.training.gan import GANTrainConfig, GANTraining
from engine.training.scaffold import TrainingImages, checkpoint_path, run_training
from models.gan import GANConfig
from models.sync_batchnorm import GlobalBatchNorm2d, local_batchnorm, sync_batchnorm
from tests.engine.coloured_squares import colour_dataset

WORLD = 2
SEED = 5
# Two archs (the resnet one has two conditional BatchNorms per block), DiffAugment on, two steps, and two
# discriminator updates a step in one: batches, noise and augmentation must stay in step across processes.
CASES = {
    "resnet": GANTrainConfig(steps=2, batch_size=8, d_steps=2, diffaugment=True, log_every=1),
    "dcgan": GANTrainConfig(steps=2, batch_size=8, diffaugment=True, log_every=1),
}


def tiny(arch: str, **changes) -> GANConfig:
    """The `tiny` preset's GAN widths, at 16x16 on the coloured squares' one attribute."""
    widths = {"g_width": 8, "d_width": 8, "max_width": 32, "z_dim": 16, "embed_dim": 8}
    return GANConfig(attribute_names=("colour",), cardinalities=(3,), image_size=16, arch=arch, **widths, **changes)


def training(arch: str) -> GANTraining:
    """The GAN trainer of ``CASES[arch]``, with Adam's ε raised from 1e-8 to 1e-4.

    Adam's first step is lr·g/(|g| + ε): a full ±lr whatever |g| is. A bias that a BatchNorm follows has a
    gradient of 0 in exact arithmetic (the normalisation cancels it), so in float it is noise of ~1e-8 that
    the order of additions decides, and any two runs that add in another order (one process or two, one
    thread or four) step those biases by ±lr at random. With ε = 1e-4 that noise moves them by ~1e-7, and every
    other step stays what the gradient makes it; the comparison is then of the gradients, which is the claim.
    """
    images, labels = colour_dataset(32)
    data = TrainingImages.checked(images, labels, tiny(arch), model="GAN")
    trainer = GANTraining(data, tiny(arch), CASES[arch], seed=SEED)
    for optimiser in trainer.optimisers().values():
        for group in optimiser.param_groups:
            group["eps"] = 1e-4
    return trainer


def state(trainer: GANTraining) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{key}": value.detach().clone()
        for name, net in trainer.networks().items()
        for key, value in net.state_dict().items()
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: str) -> None:
    """One of the run's processes, as torchrun would start it: its place in the environment."""
    torch.set_num_threads(1)
    env = {"RANK": rank, "WORLD_SIZE": WORLD, "LOCAL_RANK": rank, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
    os.environ.update({key: str(value) for key, value in env.items()})
    with process_group("cpu", os.environ) as (ranks, device):
        assert device == "cpu" and ranks == Ranks(rank=rank, world_size=WORLD, local_rank=rank)
        results = {}
        for arch in CASES:
            trainer = training(arch)
            # Both processes are given the folder; only rank 0 may write to it.
            loop = run_training(trainer, checkpoint_dir=Path(out) / arch, show_progress=False, ranks=ranks)
            results[arch] = {"state": state(trainer), "history": loop.history}
            # The trained networks come back plain: local BatchNorm, no DDP replica.
            assert not any(isinstance(m, GlobalBatchNorm2d) for m in trainer.g.modules())
            assert all(trainer.replica(name) is trainer.networks()[name] for name in trainer.distributable)
        torch.save(results, Path(out) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def distributed_runs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    mp.start_processes(_worker, args=(_free_port(), str(out)), nprocs=WORLD, start_method="spawn")
    return out


@pytest.mark.parametrize("arch", list(CASES))
def test_two_gloo_processes_take_the_single_process_steps(distributed_runs, arch, tmp_path):
    single = training(arch)
    loop = run_training(single, checkpoint_dir=tmp_path, show_progress=False)
    expected = state(single)
    for rank in range(WORLD):
        got = torch.load(distributed_runs / f"rank{rank}.pt", weights_only=False)[arch]
        assert got["state"].keys() == expected.keys()
        for key, value in expected.items():
            # all three networks' weights, BatchNorm running statistics, spectral norms' u and v
            torch.testing.assert_close(got["state"][key], value, rtol=0, atol=1e-5, msg=f"rank {rank}: {key}")
        assert [r["step"] for r in got["history"]] == [r["step"] for r in loop.history] == [1, 2]
        for mine, theirs in zip(got["history"], loop.history, strict=True):  # means over the global batch
            assert all(abs(mine[k] - theirs[k]) < 1e-5 for k in GANTraining.metrics), (mine, theirs)
    # rank 0 wrote the checkpoint (and nothing else), with the run's random state after the same draws
    ours, theirs = (torch.load(checkpoint_path(d), weights_only=False) for d in (distributed_runs / arch, tmp_path))
    assert torch.equal(ours["rng"], theirs["rng"]) and ours["step"] == theirs["step"] == 2
    assert sorted(p.name for p in (distributed_runs / arch).iterdir()) == ["checkpoint.pt"]


# ---------------------------------------------------------------------------------------------- one process


def test_rows_split_a_global_batch_into_equal_consecutive_shares():
    shares = [Ranks(rank=r, world_size=4).rows(8) for r in range(4)]
    assert shares == [slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 8)]
    assert SINGLE_PROCESS.rows(7) == slice(0, 7) and SINGLE_PROCESS.mean({"a": 1.5}) == {"a": 1.5}
    with pytest.raises(ValueError, match="multiple of 3"):
        Ranks(rank=0, world_size=3).rows(8)


def test_torchrun_s_environment_is_required_and_read():
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    assert ranks_from_env(env, backend="gloo") == Ranks(rank=1, world_size=2, local_rank=1)
    with pytest.raises(ValueError, match="torchrun"):
        ranks_from_env({k: v for k, v in env.items() if k != "RANK"}, backend="gloo")
    with pytest.raises(ValueError, match="not a valid place"):
        ranks_from_env({**env, "RANK": "2"}, backend="gloo")
    with pytest.raises(ValueError, match="--device"), process_group("cuda:1", env):
        pass


def test_what_cannot_run_distributed_is_refused_before_any_collective():
    from engine.training.gan import PrivateGANTraining
    from engine.training.vae import VAETrainConfig, VAETraining
    from models.vae import VAEConfig

    images, labels = colour_dataset(16)
    four = Ranks(rank=0, world_size=4)
    data = TrainingImages.checked(images, labels, tiny("dcgan"), model="GAN")
    with pytest.raises(ValueError, match="multiple of 4"):
        GANTraining(data, tiny("dcgan"), GANTrainConfig(batch_size=6), seed=0).distribute(four)
    vae = VAEConfig(attribute_names=("colour",), cardinalities=(3,), image_size=16, g_width=4, e_width=4)
    with pytest.raises(ValueError, match="VAETraining runs in one process only"):
        VAETraining(data, vae, VAETrainConfig(batch_size=8), seed=0).distribute(four)
    # The private GAN refuses the same way (building one calibrates DP-SGD's noise: seconds).
    assert PrivateGANTraining.distributable == ()


def test_global_batchnorm_is_batchnorm_outside_a_process_group_and_swaps_back():
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm2d(4, affine=False)))
    plain = copy.deepcopy(net)
    weight, running = net[1].weight, net[1].running_mean
    sync_batchnorm(net)
    assert isinstance(net[1], GlobalBatchNorm2d) and isinstance(net[2][0], GlobalBatchNorm2d)
    assert net[1].weight is weight and net[1].running_mean is running  # the same tensors, not copies
    x = torch.randn(6, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(net(x), plain(x))
    torch.testing.assert_close(net.state_dict(), plain.state_dict())  # running statistics updated alike
    local_batchnorm(net)
    assert type(net[1]) is nn.BatchNorm2d and type(net[2][0]) is nn.BatchNorm2d and net[1].weight is weight


# ---------------------------------------------------------------------------------------------- the command


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        (["--distributed"], {}, "torchrun --nproc-per-node N"),  # not started by torchrun
        (["--distributed", "--device", "cuda:1"], {}, "numbered by LOCAL_RANK"),
        ([], {"WORLD_SIZE": "2"}, "add --distributed"),  # started by torchrun, flag forgotten
    ],
)
def test_train_generator_says_how_to_start_a_distributed_run(flags, env, message, monkeypatch, tmp_path, caplog):
    from engine.cli import main

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    argv = ["train", "generator", "--dataset", "demo", "--data", str(tmp_path), "--out", str(tmp_path / "run")]
    assert main([*argv, *flags]) == 2
    assert message in caplog.text
    assert not (tmp_path / "run").exists()
