"""Differential privacy for the GAN's discriminator and the visual preference model (DP-SGD through Opacus)."""

import copy
import dataclasses
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from engine.training.config import load_train_config
from engine.training.gan import GANTrainConfig, PrivateGANTraining, build_gan, train_gan
from engine.training.privacy import PrivacyConfig, PrivateStep
from engine.training.visual import VisualData, VisualTrainConfig, encode_items, fit_encoder
from models.gan import GANConfig
from models.visual import VisualEncoder, VisualEncoderConfig
from tests.engine.coloured_squares import colour_dataset


def gan_config(**changes) -> GANConfig:
    base = {"z_dim": 8, "embed_dim": 8, "g_width": 8, "d_width": 8, "max_width": 32, "arch": "dcgan", "d_norm": "group"}
    return GANConfig(attribute_names=("colour",), cardinalities=(3,), image_size=16, **{**base, **changes})


# ---------------------------------------------------------------------------------------------- config


def test_privacy_is_off_by_default_and_loaded_strictly():
    plain = load_train_config("tiny")
    assert not plain.gan_training.privacy.enabled and not plain.visual.privacy.enabled
    on = load_train_config(
        "tiny",
        overrides={
            "gan": {"d_norm": "group"},
            "gan_training": {"privacy": {"target_epsilon": 4}},
            "visual": {"privacy": {"target_epsilon": 2, "max_grad_norm": 0.5}},
        },
    )
    assert on.gan_training.privacy.target_epsilon == 4 and on.gan_training.privacy.delta == 1e-5
    assert on.visual.privacy.max_grad_norm == 0.5
    with pytest.raises(ValueError, match=r"unknown keys \['epsilom'\]"):
        load_train_config("tiny", overrides={"visual": {"privacy": {"epsilom": 4}}})
    with pytest.raises(ValueError, match="d_norm"):  # a private GAN needs the GroupNorm discriminator
        load_train_config("tiny", overrides={"gan_training": {"privacy": {"target_epsilon": 4}}})


def test_a_saved_training_config_reads_back_with_its_privacy_settings():
    from models.io import config_from_dict, config_to_dict

    config = GANTrainConfig(steps=7, d_steps=2, privacy=PrivacyConfig(target_epsilon=2.0, max_grad_norm=0.5))
    assert config_from_dict(GANTrainConfig, config_to_dict(config)) == config
    saved = config_to_dict(config)
    saved["privacy"]["epsilom"] = 1.0
    with pytest.raises(ValueError, match=r"privacy: unknown keys \['epsilom'\]"):
        config_from_dict(GANTrainConfig, saved, source="run.json")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"target_epsilon": 0.0}, "target_epsilon"),
        ({"target_epsilon": math.inf}, "target_epsilon"),
        ({"delta": 1.0}, "delta"),
        ({"max_grad_norm": 0.0}, "max_grad_norm"),
        ({"accountant": "moments"}, "accountant"),
    ],
)
def test_privacy_config_validation(changes, message):
    with pytest.raises(ValueError, match=message):
        PrivacyConfig(**changes)


# ---------------------------------------------------------------------------------------------- DP-SGD


def _private(module: nn.Module, *, lr: float = 1.0, clip: float = 1e6, n: int = 8) -> PrivateStep:
    config = PrivacyConfig(target_epsilon=1e3, max_grad_norm=clip)
    opt = torch.optim.SGD(module.parameters(), lr=lr)
    private = PrivateStep(module, opt, config, n_units=n, batch_size=n, steps=1, unit="shopper", seed=0)
    private.optimizer.noise_multiplier = 0.0  # to compare with plain SGD: clipping only
    return private


def _pair_loss(model, feats_i, feats_j, u):  # f is called twice per unit, as in the preference model
    return -F.logsigmoid((u[:, None, :] * (model(feats_i) - model(feats_j))).sum(-1)).mean()


def test_per_unit_gradients_without_noise_or_clipping_give_the_batch_gradient():
    torch.manual_seed(0)
    enc = VisualEncoder(VisualEncoderConfig(feature_dim=6, item_dim=3, hidden=5))
    twin = copy.deepcopy(enc)
    feats_i, feats_j, u = torch.randn(8, 4, 6), torch.randn(8, 4, 6), torch.randn(8, 3)
    private = _private(enc)
    _pair_loss(private.module, feats_i, feats_j, u).backward()
    private.step()
    opt = torch.optim.SGD(twin.parameters(), lr=1.0)
    _pair_loss(twin, feats_i, feats_j, u).backward()
    opt.step()
    for a, b in zip(enc.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_clipping_bounds_what_a_step_can_move_the_weights():
    torch.manual_seed(0)
    enc = VisualEncoder(VisualEncoderConfig(feature_dim=6, item_dim=3, hidden=5))
    before = torch.cat([p.detach().flatten().clone() for p in enc.parameters()])
    private = _private(enc, clip=1e-3)
    _pair_loss(private.module, 100 * torch.randn(8, 4, 6), torch.randn(8, 4, 6), 100 * torch.randn(8, 3)).backward()
    private.step()
    moved = torch.cat([p.detach().flatten() for p in enc.parameters()]) - before
    assert 0 < moved.norm() <= 1e-3 * (1 + 1e-4)  # each of 8 units moves ≤ C / 8


def test_a_network_opacus_cannot_train_is_refused_with_the_fix():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="GroupNorm"):
        _private(net)
    images, labels = colour_dataset(16)
    loop = GANTrainConfig(steps=1, batch_size=4, privacy=PrivacyConfig(target_epsilon=4.0))
    with pytest.raises(ValueError, match="d_norm"):
        train_gan(images, labels, gan_config(d_norm="spectral"), loop, show_progress=False)


def test_a_smaller_budget_buys_more_noise():
    sigmas = []
    for eps in (1.0, 8.0):
        net = nn.Linear(2, 1)
        config = PrivacyConfig(target_epsilon=eps)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        step = PrivateStep(net, opt, config, n_units=1000, batch_size=50, steps=100, unit="shopper", seed=0)
        sigmas.append(step.noise_multiplier)
    assert sigmas[0] > 2 * sigmas[1] > 0


# ---------------------------------------------------------------------------------------------- the GAN


def test_the_private_gan_trains_records_epsilon_and_follows_its_labels():
    images, labels = colour_dataset(256)
    loop = GANTrainConfig(steps=30, batch_size=16, log_every=10, privacy=PrivacyConfig(target_epsilon=4.0))
    result = train_gan(images, labels, gan_config(), loop, seed=0, show_progress=False)
    record = result.privacy
    assert record["private"] and record["unit"] == "catalogue image" and record["units"] == 256
    assert record["steps"] == 30 and record["delta"] == 1e-5
    assert 3.0 < record["epsilon"] <= 4.0 + 1e-9  # the planned steps spend (nearly) all of the target
    assert all(math.isfinite(h[key]) for h in result.history for key in ("loss_d", "loss_g"))
    _, d0 = build_gan(gan_config(), 0)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(d0.state_dict().values(), result.discriminator.state_dict().values(), strict=True)
    )
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        red = result.generator_ema(z, torch.zeros(4, 1, dtype=torch.long))
        blue = result.generator_ema(z, torch.full((4, 1), 2, dtype=torch.long))
    assert (red - blue).abs().mean() > 1e-3
    # the hooks are gone: the trained discriminator is a plain module again
    assert not any(hasattr(p, "grad_sample") and p.grad_sample is not None for p in result.discriminator.parameters())


def test_the_plain_gan_is_recorded_as_not_private():
    images, labels = colour_dataset(32)
    result = train_gan(images, labels, gan_config(), GANTrainConfig(steps=2, batch_size=8), show_progress=False)
    assert result.privacy["private"] is False and result.privacy["epsilon"] is None


def test_a_private_run_resumes_exactly_with_its_accountant(tmp_path, monkeypatch):
    images, labels = colour_dataset(64)
    loop = GANTrainConfig(
        steps=4, batch_size=8, checkpoint_every=2, log_every=1, privacy=PrivacyConfig(target_epsilon=4.0)
    )
    full = train_gan(images, labels, gan_config(), loop, seed=3, show_progress=False)
    step = PrivateGANTraining.step

    def killed_after_two(training, done, rng):
        if done == 2:
            raise KeyboardInterrupt
        return step(training, done, rng)

    with monkeypatch.context() as m:
        m.setattr(PrivateGANTraining, "step", killed_after_two)
        with pytest.raises(KeyboardInterrupt):
            train_gan(images, labels, gan_config(), loop, seed=3, checkpoint_dir=tmp_path, show_progress=False)
    resumed = train_gan(
        images, labels, gan_config(), loop, seed=3, checkpoint_dir=tmp_path, resume=True, show_progress=False
    )
    for a, b in zip(full.generator_ema.state_dict().values(), resumed.generator_ema.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    assert resumed.privacy["epsilon"] == pytest.approx(full.privacy["epsilon"]) and resumed.privacy["steps"] == 4


def test_several_discriminator_steps_per_generator_step_are_each_accounted_for():
    images, labels = colour_dataset(64)
    loop = GANTrainConfig(steps=3, batch_size=8, d_steps=4, privacy=PrivacyConfig(target_epsilon=4.0))
    record = train_gan(images, labels, gan_config(), loop, seed=0, show_progress=False).privacy
    assert record["steps"] == record["planned_steps"] == 12 and record["epsilon"] <= 4.0 + 1e-9
    plain = train_gan(
        images, labels, gan_config(), dataclasses.replace(loop, privacy=PrivacyConfig()), show_progress=False
    )
    assert plain.steps == 3 and all(math.isfinite(h["loss_d"]) for h in plain.history)
    with pytest.raises(ValueError, match="d_steps"):
        GANTrainConfig(d_steps=0)


def test_a_run_saved_before_privacy_existed_resumes_as_it_was_trained(tmp_path):
    images, labels = colour_dataset(32)
    loop = GANTrainConfig(steps=2, batch_size=8)
    train_gan(images, labels, gan_config(), loop, seed=0, checkpoint_dir=tmp_path, show_progress=False)
    path = tmp_path / "checkpoint.pt"
    state = torch.load(path, weights_only=False)
    for key in ("privacy", "d_steps"):
        del state["train_config"][key]
    del state["extra"]
    torch.save(state, path)
    longer = dataclasses.replace(loop, steps=3)
    resumed = train_gan(
        images, labels, gan_config(), longer, seed=0, checkpoint_dir=tmp_path, resume=True, show_progress=False
    )
    assert resumed.steps == 3
    private = dataclasses.replace(longer, privacy=PrivacyConfig(target_epsilon=4.0))
    with pytest.raises(ValueError, match=r"train_config\.privacy"):  # but not as a private run
        train_gan(
            images, labels, gan_config(), private, seed=0, checkpoint_dir=tmp_path, resume=True, show_progress=False
        )


# ---------------------------------------------------------------------------------------------- the preference model


def test_the_private_preference_model_still_learns_two_tastes():
    """Shoppers 0..199 like items whose first feature is high, 200..399 the second (as the plain model's
    test); with user-level DP at ε = 8 a cold item of each kind is still ranked by its features alone."""
    rng = np.random.default_rng(0)
    n_items, n_users = 40, 400
    kind = np.arange(n_items) % 2
    feats = rng.normal(0, 0.1, (n_items, 6)).astype(np.float32)
    feats[np.arange(n_items), kind] += 1.0
    item_f = np.stack([kind == 0, kind == 1], axis=1).astype(np.float32)
    user_f = np.repeat(np.eye(2, dtype=np.float32), n_users // 2, axis=0)
    rows, cols = [], []
    for u in range(n_users):
        liked = rng.choice(np.flatnonzero(kind == (2 * u // n_users))[:-1], 5, replace=False)
        rows += [u] * len(liked)
        cols += list(liked)
    matrix = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_users, n_items))
    data = VisualData(
        item_ids=np.arange(n_items).astype(str),
        features=feats,
        codes=np.zeros((n_items, 1), dtype=np.int64),
        matrix_cols=np.arange(n_items),
    )
    warm = np.arange(n_items - 2)
    cfg = VisualTrainConfig(hidden=16, steps=150, batch_size=64, lr=1e-2, privacy=PrivacyConfig(target_epsilon=8.0))
    enc, record = fit_encoder(data, warm, matrix, user_f, item_f, cfg, seed=0, show_progress=False)
    assert record["unit"] == "shopper" and record["units"] == n_users and 0 < record["epsilon"] <= 8.0 + 1e-9
    scores = user_f[[0, n_users - 1]] @ encode_items(enc, data, np.array([n_items - 2, n_items - 1])).T
    assert scores[0, 0] > scores[0, 1] and scores[1, 1] > scores[1, 0]
    plain, off = fit_encoder(
        data,
        warm,
        matrix,
        user_f,
        item_f,
        dataclasses.replace(cfg, privacy=PrivacyConfig()),
        seed=0,
        show_progress=False,
    )
    assert off["private"] is False and isinstance(plain, VisualEncoder)


# ---------------------------------------------------------------------------------------------- the bundle


def _manifest(root, version, component=None) -> dict:
    import json

    path = root / version / (component or "") / "manifest.json"
    return json.loads(path.read_text())


def test_a_plain_bundle_records_its_components_as_not_private(trained_artifacts):
    root, version = trained_artifacts
    for component in ("generator", "visual"):
        assert _manifest(root, version, component)["privacy"]["epsilon"] is None
    metrics = _manifest(root, version)["metrics"]
    assert metrics["generator"]["privacy"]["private"] is False and metrics["visual"]["privacy"]["private"] is False


def test_a_private_bundle_records_epsilon_per_component(demo_store, tmp_path):
    from engine.training.pipeline import train_bundle

    config = load_train_config(
        "tiny",
        overrides={
            "seed": 1,
            "gan": {"d_norm": "group"},
            "gan_training": {"privacy": {"target_epsilon": 8}},
            "visual": {"steps": 20, "privacy": {"target_epsilon": 2, "delta": 1e-6}},
        },
    )
    version = train_bundle(demo_store, tmp_path, config, show_progress=False)
    gan, visual = _manifest(tmp_path, version, "generator"), _manifest(tmp_path, version, "visual")
    assert gan["privacy"]["unit"] == "catalogue image" and 0 < gan["privacy"]["epsilon"] <= 8
    assert visual["privacy"]["unit"] == "shopper" and 0 < visual["privacy"]["epsilon"] <= 2
    assert visual["privacy"]["delta"] == 1e-6 and visual["metrics"]["validation"]["privacy"]["private"]
    bundle = _manifest(tmp_path, version)
    assert bundle["metrics"]["visual"]["privacy"]["epsilon"] == visual["privacy"]["epsilon"]
    assert bundle["config"]["gan_training"]["privacy"]["target_epsilon"] == 8
