import dataclasses

import pytest
import torch

from engine.training.gan import GANTrainConfig, GANTraining, diffaugment_default, train_gan
from models.gan import GANConfig
from tests.engine.coloured_squares import colour_dataset, requested_colour_share
from tests.engine.generator_training_contract import TrainerContract


def cfg(**changes) -> GANConfig:
    base = {"z_dim": 8, "embed_dim": 8, "g_width": 16, "d_width": 16, "max_width": 64, "arch": "dcgan"}
    return GANConfig(attribute_names=("colour",), cardinalities=(3,), image_size=16, **{**base, **changes})


class TestGANLoop(TrainerContract):
    training_cls = GANTraining
    model = "GAN"

    def config(self, **changes) -> GANConfig:
        return cfg(**{"g_width": 4, "d_width": 4, **changes})

    def loop(self, **settings) -> GANTrainConfig:
        return GANTrainConfig(**{"batch_size": 8, **settings})

    def train(self, images, labels, loop, *, config=None, **kwargs):
        return train_gan(images, labels, config or self.config(), loop, **kwargs)

    def weights(self, result) -> dict[str, torch.Tensor]:
        nets = {"g": result.generator, "g_ema": result.generator_ema, "d": result.discriminator}
        return {f"{name}.{k}": v for name, net in nets.items() for k, v in net.state_dict().items()}


def test_trained_generator_draws_the_requested_colour():
    train = GANTrainConfig(steps=300, batch_size=32, lr_g=1e-3, lr_d=1e-3, ema_decay=0.99, log_every=100)
    result = train_gan(*colour_dataset(192), cfg(), train, seed=0, show_progress=False)
    assert requested_colour_share(result.generator_ema, per_colour=16, z_dim=8) >= 0.8
    assert len(result.history) == 3 and result.steps == 300
    assert not result.generator_ema.training and not result.discriminator.training


def test_the_ema_generator_averages_the_trained_one():
    result = train_gan(*colour_dataset(32), cfg(), GANTrainConfig(steps=3, batch_size=8), show_progress=False)
    g, ema = result.generator.state_dict(), result.generator_ema.state_dict()
    assert g.keys() == ema.keys()
    assert any(not torch.equal(g[k], ema[k]) for k in g if g[k].is_floating_point())


def test_diffaugment_follows_the_catalogue_size_unless_set():
    images, labels = colour_dataset(16)
    small = GANTrainConfig(steps=1, batch_size=4)
    assert diffaugment_default(len(images)) and not diffaugment_default(20_000)
    assert train_gan(images, labels, cfg(), small, show_progress=False).diffaugment
    off = dataclasses.replace(small, diffaugment=False)
    assert not train_gan(images, labels, cfg(), off, show_progress=False).diffaugment


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr_g": 0.0}, "learning rates"),
        ({"lr_d": -1.0}, "learning rates"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"translation": 0.5}, "translation"),
        ({"cutout": 1.0}, "cutout"),
    ],
)
def test_train_config_validation(changes, message):
    with pytest.raises(ValueError, match=message):
        GANTrainConfig(**changes)
