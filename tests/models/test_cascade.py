"""The cascade: a low-resolution GAN and a frozen SR net, called as one generator of the served size."""

import numpy as np
import pytest
import torch

from features.degradations import downscale, upscale
from models.cascade import (
    CascadeDiscriminator,
    CascadeGenerator,
    load_discriminator,
    load_generator,
    reduce,
)
from models.gan import Discriminator, GANConfig, Generator
from models.sr import SRConfig, SRNet
from tests.models.saved_network import TINY, Y


def base_config() -> GANConfig:
    return GANConfig(**TINY, image_size=16, d_width=4, arch="upsample")


def cascade(scale: int = 2, *, trained_upscaler: bool = False) -> CascadeGenerator:
    torch.manual_seed(0)
    upscaler = SRNet(SRConfig(scale=scale, width=4, blocks=1))
    if trained_upscaler:  # off its bicubic start, as a trained one is
        torch.nn.init.normal_(upscaler.tail.weight, std=0.05)
    g = Generator(base_config()).train()
    with torch.no_grad():
        g(torch.randn(5, 8), Y)  # BatchNorm statistics off their defaults
    return CascadeGenerator(g.eval(), upscaler).eval()


def z5() -> torch.Tensor:
    return torch.randn(5, 8, generator=torch.Generator().manual_seed(1))


def test_serves_the_upscaled_size_and_says_so():
    g = cascade(scale=4)
    x = g(z5(), Y)
    assert x.shape == (5, 3, 64, 64) and x.abs().max() <= 1.0
    assert g.config.image_size == 64 and g.base_size == 16 and g.config.z_dim == 8


def test_an_untrained_upscaler_is_bicubic_interpolation_of_the_base_image():
    g = cascade()
    with torch.no_grad():
        low = ((g.base(z5(), Y) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        high = ((g.upscaler(torch.from_numpy(low).permute(0, 3, 1, 2).float() / 255).clamp(0, 1)) * 255).round()
    expected = np.stack([upscale(im, 2) for im in low]).astype(np.float32)
    # the SR net's fixed skip is Keys' bicubic kernel, as Pillow's (borders replicate rather than renormalise)
    inner = (slice(None), slice(4, -4), slice(4, -4))
    got = high.permute(0, 2, 3, 1).numpy()
    assert np.abs(got[inner] - expected[inner]).max() <= 1.0


def test_gradients_reach_the_latent_code_through_the_frozen_upscaler():
    g = cascade(trained_upscaler=True)
    z = z5().requires_grad_(True)
    g(z, Y).pow(2).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert all(p.grad is None for p in g.upscaler.parameters())
    g.train()
    assert g.base.training and not g.upscaler.training  # the upscaler never trains


def test_round_trip_through_the_generator_folder(tmp_path):
    g = cascade(trained_upscaler=True)
    g.save(tmp_path)
    loaded = load_generator(tmp_path)
    assert isinstance(loaded, CascadeGenerator) and loaded.config == g.config
    with torch.no_grad():
        assert torch.equal(loaded(z5(), Y), g(z5(), Y))


def test_a_folder_without_an_upscaler_loads_as_a_plain_generator(tmp_path):
    g = Generator(base_config()).eval()
    g.save(tmp_path)
    Discriminator(base_config()).save(tmp_path)
    assert type(load_generator(tmp_path)) is Generator
    assert type(load_discriminator(tmp_path)) is Discriminator


def test_the_discriminator_judges_served_images_at_the_base_size(tmp_path):
    g = cascade()
    d = Discriminator(base_config()).eval()
    g.save(tmp_path)
    d.save(tmp_path)
    loaded = load_discriminator(tmp_path)
    assert isinstance(loaded, CascadeDiscriminator)
    x = g(z5(), Y).detach()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, Y), Discriminator.load(tmp_path)(reduce(x, 2), Y))


def test_reduce_is_the_differentiable_twin_of_the_training_images_reduction():
    small = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    image = upscale(small, 4)  # a smooth 32 px image
    ours = reduce(torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float(), 2)[0].permute(1, 2, 0).round().numpy()
    error = np.abs(ours - downscale(image, 2))
    # Pillow rounds and clips to 8 bits between its two passes, torch does not: a few overshoots differ more
    assert np.quantile(error, 0.98) <= 1.0 and error.mean() < 0.5


def test_an_upscaler_that_does_not_enlarge_is_refused():
    with pytest.raises(ValueError, match="scale 2 or 4"):
        CascadeGenerator(Generator(base_config()), SRNet(SRConfig(scale=1, width=4, blocks=1)))
