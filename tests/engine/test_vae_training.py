import dataclasses
import math

import numpy as np
import pytest
import torch

from engine.training.gan import GANTrainConfig, train_gan
from engine.training.vae import VAETrainConfig, gaussian_nll_shared_sigma, train_vae
from models.gan import GANConfig
from models.vae import VAEConfig
from tests.engine.coloured_squares import PALETTE, colour_dataset


def cfg(**changes) -> VAEConfig:
    base = {
        "attribute_names": ("colour",),
        "cardinalities": (3,),
        "image_size": 16,
        "z_dim": 8,
        "embed_dim": 8,
        "g_width": 8,
        "e_width": 8,
        "max_width": 32,
    }
    return VAEConfig(**{**base, **changes})


# ---------------------------------------------------------------------------------------------- likelihood


def test_gaussian_nll_known_answer():
    # every pixel off by 0.5: σ² = mean squared error = 0.25; d = 4 values per image
    x_hat, x = torch.zeros(2, 1, 2, 2), torch.full((2, 1, 2, 2), 0.5)
    nll = gaussian_nll_shared_sigma(x_hat, x, min_log_sigma=-30.0)  # the soft clip far away
    # ½·Σ(x − x̂)²/σ² + d·log σ + ½·d·log 2π = ½·1/0.25 + 4·log 0.5 + 2·log 2π
    expected = 2.0 + 4 * math.log(0.5) + 2 * math.log(2 * math.pi)
    torch.testing.assert_close(nll, torch.full((2,), expected))
    reference = -torch.distributions.Normal(x_hat, 0.5).log_prob(x).flatten(1).sum(dim=1)
    torch.testing.assert_close(nll, reference)


def test_gaussian_nll_shares_one_sigma_across_the_batch():
    # image 0 exact, image 1 off by 1 everywhere: σ² = 0.5 for both, so they differ by ½·d·1/0.5 = d
    x_hat, x = torch.zeros(2, 3, 2, 2), torch.zeros(2, 3, 2, 2)
    x[1] = 1.0
    nll = gaussian_nll_shared_sigma(x_hat, x, min_log_sigma=-30.0)
    assert (nll[1] - nll[0]).item() == pytest.approx(12.0, rel=1e-5)
    assert nll[0].item() == pytest.approx(12 * 0.5 * math.log(0.5) + 6 * math.log(2 * math.pi), rel=1e-5)


def test_gaussian_nll_of_a_perfect_batch_stops_at_the_soft_clip():
    x = torch.rand(3, 1, 2, 2)
    nll = gaussian_nll_shared_sigma(x.clone(), x, min_log_sigma=-6.0)
    assert torch.isfinite(nll).all()
    # log σ stops just above −6 (a soft clip), so the loss stays just above d·(−6) + ½·d·log 2π
    floor = 4 * -6.0 + 2 * math.log(2 * math.pi)
    assert ((nll > floor) & (nll < floor + 0.01)).all()
    lower = gaussian_nll_shared_sigma(x.clone(), x, min_log_sigma=-8.0)
    assert ((lower > 4 * -8.0 + 2 * math.log(2 * math.pi)) & (lower < nll - 7.9)).all()


# ---------------------------------------------------------------------------------------------- training


def test_training_lowers_the_loss():
    images, labels = colour_dataset(128)
    result = train_vae(
        images,
        labels,
        cfg(),
        VAETrainConfig(steps=30, batch_size=8, lr=2e-3, kl_warmup=0, log_every=10),
        seed=0,
        show_progress=False,
    )
    losses = [r["loss"] for r in result.history]
    assert [r["step"] for r in result.history] == [10, 20, 30]
    assert losses[-1] < losses[0] - 100  # per-image negative ELBO, in nats over 768 values
    assert result.steps == 30 and not result.stopped_early and not result.vae.training
    for r in result.history:
        assert r["loss"] == pytest.approx(r["nll"] + r["kl"], rel=1e-5)  # β = 1, no warm-up


def test_trained_vae_decodes_the_requested_colour():
    images, labels = colour_dataset(128)
    result = train_vae(
        images,
        labels,
        cfg(),
        VAETrainConfig(steps=80, batch_size=16, lr=3e-3, kl_warmup=40, log_every=40),
        seed=0,
        show_progress=False,
    )
    with torch.no_grad():
        y = torch.arange(3).repeat_interleave(8)[:, None]
        x = result.vae(torch.randn(24, 8, generator=torch.Generator().manual_seed(1)), y)
    rgb = ((x + 1) * 127.5).permute(0, 2, 3, 1).reshape(24, -1, 3).numpy()
    sat = rgb.max(axis=2) - rgb.min(axis=2)
    dominant = np.array([rgb[k][sat[k] > np.quantile(sat[k], 0.8)].mean(axis=0).argmax() for k in range(24)])
    assert (dominant == PALETTE.argmax(axis=1)[y.ravel().numpy()]).mean() >= 0.8


def state(result) -> dict:
    return result.vae.state_dict()


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    images, labels = colour_dataset(64)
    train = VAETrainConfig(steps=6, batch_size=8, kl_warmup=4, log_every=1)
    full = train_vae(images, labels, cfg(), train, seed=5, show_progress=False)
    train_vae(
        images, labels, cfg(), dataclasses.replace(train, steps=3), seed=5, checkpoint_dir=tmp_path, show_progress=False
    )
    assert (tmp_path / "checkpoint.pt").is_file()
    resumed = train_vae(images, labels, cfg(), train, seed=5, checkpoint_dir=tmp_path, resume=True, show_progress=False)
    assert resumed.steps == 6
    for (name, a), b in zip(state(full).items(), state(resumed).values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    # one record per step (log_every=1): the resumed history is the uninterrupted one
    assert [r["step"] for r in resumed.history] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(full.history, resumed.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


def test_history_means_after_a_resume_cover_only_the_steps_run(tmp_path):
    """A run stopped between two log records and resumed must not divide the next record by steps it did
    not run: each record is the mean over the steps since the previous record."""
    images, labels = colour_dataset(64)
    per_step = train_vae(
        images, labels, cfg(), VAETrainConfig(steps=6, batch_size=8, log_every=1), seed=3, show_progress=False
    )
    losses = [r["loss"] for r in per_step.history]
    train = VAETrainConfig(steps=6, batch_size=8, log_every=4)
    first = train_vae(
        images, labels, cfg(), dataclasses.replace(train, steps=3), seed=3, checkpoint_dir=tmp_path, show_progress=False
    )
    assert [r["step"] for r in first.history] == [3]
    assert first.history[0]["loss"] == pytest.approx(np.mean(losses[:3]), rel=1e-5)
    resumed = train_vae(images, labels, cfg(), train, seed=3, checkpoint_dir=tmp_path, resume=True, show_progress=False)
    assert [r["step"] for r in resumed.history] == [3, 4, 6]
    assert resumed.history[1]["loss"] == pytest.approx(losses[3], rel=1e-5)  # step 4 alone
    assert resumed.history[2]["loss"] == pytest.approx(np.mean(losses[4:6]), rel=1e-5)


def test_a_time_budget_stop_is_recorded():
    images, labels = colour_dataset(32)
    result = train_vae(
        images,
        labels,
        cfg(),
        VAETrainConfig(steps=1000, batch_size=4, max_seconds=1e-6, log_every=50),
        show_progress=False,
    )
    assert result.steps == 1 and result.stopped_early
    assert [r["step"] for r in result.history] == [1]


def test_bad_conditions_are_refused():
    images, labels = colour_dataset(16)
    small = VAETrainConfig(steps=1, batch_size=4)
    with pytest.raises(ValueError, match="outside"):
        train_vae(images, labels + 5, cfg(), small, show_progress=False)
    with pytest.raises(ValueError, match="outside"):
        train_vae(images, labels - 1, cfg(), small, show_progress=False)
    with pytest.raises(ValueError, match="configured for"):
        train_vae(images[:, :8, :8], labels, cfg(), small, show_progress=False)
    with pytest.raises(ValueError, match=r"need \(N, 1\) conditions"):
        train_vae(images, np.concatenate([labels, labels], axis=1), cfg(), small, show_progress=False)
    with pytest.raises(ValueError, match=r"need \(N, 1\) conditions"):
        train_vae(images, labels[:10], cfg(), small, show_progress=False)


def test_resume_refuses_a_missing_foreign_or_different_checkpoint(tmp_path):
    images, labels = colour_dataset(16)
    small = VAETrainConfig(steps=1, batch_size=4)
    with pytest.raises(FileNotFoundError, match=r"no checkpoint\.pt"):
        train_vae(images, labels, cfg(), small, checkpoint_dir=tmp_path, resume=True, show_progress=False)
    train_vae(images, labels, cfg(), small, checkpoint_dir=tmp_path / "vae", show_progress=False)
    with pytest.raises(ValueError, match="different VAEConfig"):
        train_vae(
            images, labels, cfg(z_dim=4), small, checkpoint_dir=tmp_path / "vae", resume=True, show_progress=False
        )
    gan = GANConfig(attribute_names=("colour",), cardinalities=(3,), image_size=16, g_width=4, d_width=4, z_dim=8)
    train_gan(
        images, labels, gan, GANTrainConfig(steps=1, batch_size=4), checkpoint_dir=tmp_path / "gan", show_progress=False
    )
    with pytest.raises(ValueError, match="not a VAE checkpoint"):
        train_vae(images, labels, cfg(), small, checkpoint_dir=tmp_path / "gan", resume=True, show_progress=False)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps": 0}, "steps"),
        ({"batch_size": 1}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"beta_kl": -1.0}, "beta_kl"),
        ({"kl_warmup": -1}, "kl_warmup"),
        ({"max_seconds": 0.0}, "max_seconds"),
        ({"checkpoint_every": -1}, "checkpoint_every"),
        ({"log_every": 0}, "log_every"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_train_config_validation(changes, message):
    with pytest.raises(ValueError, match=message):
        VAETrainConfig(**changes)
