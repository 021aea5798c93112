import dataclasses

import numpy as np
import pytest
import torch

from engine.training.gan import GANTrainConfig, train_gan
from models.gan import GANConfig
from tests.engine.coloured_squares import PALETTE, colour_dataset


def cfg() -> GANConfig:
    return GANConfig(
        attribute_names=("colour",),
        cardinalities=(3,),
        image_size=16,
        z_dim=8,
        embed_dim=8,
        g_width=16,
        d_width=16,
        max_width=64,
        arch="dcgan",
    )


def test_trained_generator_draws_the_requested_colour():
    images, labels = colour_dataset(192)
    result = train_gan(
        images,
        labels,
        cfg(),
        GANTrainConfig(steps=300, batch_size=32, lr_g=1e-3, lr_d=1e-3, ema_decay=0.99, log_every=100),
        seed=0,
        show_progress=False,
    )
    g = result.generator_ema
    with torch.no_grad():
        y = torch.arange(3).repeat_interleave(16)[:, None]
        x = g(torch.randn(48, 8, generator=torch.Generator().manual_seed(1)), y)
    rgb = ((x + 1) * 127.5).permute(0, 2, 3, 1).reshape(48, -1, 3).numpy()
    # the most saturated pixels of each image should have the requested colour's dominant channel
    sat = rgb.max(axis=2) - rgb.min(axis=2)
    dominant = np.array([rgb[k][sat[k] > np.quantile(sat[k], 0.8)].mean(axis=0).argmax() for k in range(48)])
    expected = PALETTE.argmax(axis=1)[y.ravel().numpy()]
    assert (dominant == expected).mean() >= 0.8
    assert len(result.history) == 3 and result.steps == 300


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    images, labels = colour_dataset(64)
    train = GANTrainConfig(steps=6, batch_size=8, log_every=2)
    full = train_gan(images, labels, cfg(), train, seed=5, show_progress=False)
    # run 3 steps with a checkpoint, then resume to 6
    train_gan(
        images,
        labels,
        cfg(),
        dataclasses.replace(train, steps=3),
        seed=5,
        checkpoint_dir=tmp_path,
        show_progress=False,
    )
    resumed = train_gan(images, labels, cfg(), train, seed=5, checkpoint_dir=tmp_path, resume=True, show_progress=False)
    for a, b in zip(full.generator_ema.state_dict().values(), resumed.generator_ema.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert resumed.steps == 6


def test_bad_conditions_are_refused():
    images, labels = colour_dataset(16)
    with pytest.raises(ValueError, match="outside"):
        train_gan(images, labels + 5, cfg(), GANTrainConfig(steps=1, batch_size=4), show_progress=False)
    with pytest.raises(ValueError, match="configured for"):
        train_gan(images[:, :8, :8], labels, cfg(), GANTrainConfig(steps=1, batch_size=4), show_progress=False)
