import math

import pytest
import torch

from engine.training.vae import VAETrainConfig, VAETraining, VAETrainingResult, gaussian_nll_shared_sigma, train_vae
from models.vae import VAEConfig
from tests.engine.coloured_squares import colour_dataset, requested_colour_share
from tests.engine.generator_training_contract import TrainerContract


def cfg(**changes) -> VAEConfig:
    base = {"z_dim": 8, "embed_dim": 8, "g_width": 8, "e_width": 8, "max_width": 32}
    return VAEConfig(attribute_names=("colour",), cardinalities=(3,), image_size=16, **{**base, **changes})


class TestVAELoop(TrainerContract):
    training_cls = VAETraining
    model = "VAE"

    def config(self, **changes) -> VAEConfig:
        return cfg(**changes)

    def loop(self, **settings) -> VAETrainConfig:
        return VAETrainConfig(**{"batch_size": 8, "kl_warmup": 4, **settings})

    def train(self, images, labels, loop, *, config=None, **kwargs):
        return train_vae(images, labels, config or self.config(), loop, **kwargs)

    def weights(self, result) -> dict[str, torch.Tensor]:
        return result.vae.state_dict()


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


def trained(n: int, **settings) -> VAETrainingResult:
    """The tiny VAE trained from seed 0 on ``n`` coloured squares."""
    return train_vae(*colour_dataset(n), cfg(), VAETrainConfig(**settings), seed=0, show_progress=False)


def test_training_lowers_the_loss():
    result = trained(128, steps=30, batch_size=8, lr=2e-3, kl_warmup=0, log_every=10)
    losses = [r["loss"] for r in result.history]
    assert [r["step"] for r in result.history] == [10, 20, 30]
    assert losses[-1] < losses[0] - 100  # per-image negative ELBO, in nats over 768 values
    assert result.steps == 30 and not result.stopped_early and not result.vae.training
    for r in result.history:
        assert r["loss"] == pytest.approx(r["nll"] + r["kl"], rel=1e-5)  # β = 1, no warm-up


def test_the_kl_weight_warms_up_linearly():
    result = trained(32, steps=3, batch_size=8, kl_warmup=4, log_every=1)
    for step, r in enumerate(result.history, start=1):  # β = step / kl_warmup
        assert r["loss"] == pytest.approx(r["nll"] + step / 4 * r["kl"], rel=1e-5)


def test_trained_vae_decodes_the_requested_colour():
    result = trained(128, steps=80, batch_size=16, lr=3e-3, kl_warmup=40, log_every=40)
    assert requested_colour_share(result.vae, per_colour=8, z_dim=8) >= 0.8


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr": 0.0}, "lr"),
        ({"beta_kl": -1.0}, "beta_kl"),
        ({"kl_warmup": -1}, "kl_warmup"),
    ],
)
def test_train_config_validation(changes, message):
    with pytest.raises(ValueError, match=message):
        VAETrainConfig(**changes)
