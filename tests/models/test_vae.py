import math

import pytest
import torch

from models.gan import Generator
from models.vae import ConditionalVAE, VAEConfig
from tests.models.saved_network import TINY, SavedNetworkContract, Y


def tiny(arch: str = "dcgan", size: int = 16, channels: int = 3) -> VAEConfig:
    return VAEConfig(**TINY, arch=arch, image_size=size, channels=channels, e_width=4)


@pytest.mark.parametrize(("arch", "size", "channels"), [("dcgan", 32, 3), ("resnet", 16, 1)])
def test_decoder_and_encoder_shapes_and_range(arch, size, channels):
    torch.manual_seed(0)
    vae = ConditionalVAE(tiny(arch, size, channels)).eval()
    x = vae(torch.randn(5, 8), Y)
    assert x.shape == (5, channels, size, size)
    assert x.abs().max() <= 1.0
    mu, logvar = vae.encode(torch.rand(5, channels, size, size) * 2 - 1, Y)
    assert mu.shape == logvar.shape == (5, 8)
    assert isinstance(vae.decoder, Generator)  # the decoder is the GAN's generator, called the same way


def test_encoder_log_variance_is_clamped():
    vae = ConditionalVAE(tiny()).eval()
    with torch.no_grad():
        vae.encoder.logvar.bias.fill_(100.0)
    _, logvar = vae.encode(torch.zeros(2, 3, 16, 16), Y[:2])
    assert (logvar == 8.0).all()


def test_kl_is_zero_for_the_prior():
    assert torch.equal(ConditionalVAE.kl(torch.zeros(3, 5), torch.zeros(3, 5)), torch.zeros(3))


def test_kl_known_answer():
    # KL(N(μ, σ²) ‖ N(0, 1)) = ½(μ² + σ² − 1 − log σ²) per dimension, summed over dimensions
    mu = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [math.log(0.5), 0.0]])
    kl = ConditionalVAE.kl(mu, logvar)
    # row 0: ½(1 + 1 − 1 − 0) + ½(4 + 2 − 1 − ln 2) = 3 − ½ ln 2; row 1: ½(0.5 − 1 + ln 2)
    expected = torch.tensor([3.0 - 0.5 * math.log(2.0), 0.5 * (0.5 - 1.0 + math.log(2.0))])
    torch.testing.assert_close(kl, expected)
    assert (kl > 0).all()


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(4, 6), torch.ones(4, 6))
    torch.testing.assert_close(ConditionalVAE.kl(mu, logvar), torch.distributions.kl_divergence(q, p).sum(dim=1))


def test_reparameterise_known_answer():
    z = ConditionalVAE.reparameterise(torch.tensor([[1.0]]), torch.tensor([[math.log(4.0)]]), torch.tensor([[0.5]]))
    torch.testing.assert_close(z, torch.tensor([[2.0]]))  # μ + σ·ε = 1 + 2·0.5


class TestVAESaveLoad(SavedNetworkContract):
    weights = "vae"

    def make(self) -> ConditionalVAE:
        torch.manual_seed(0)
        vae = ConditionalVAE(tiny()).train()
        with torch.no_grad():  # move BN running statistics off their defaults so the buffers are exercised
            vae.encode(torch.rand(5, 3, 16, 16), Y)
            vae(torch.randn(5, 8), Y)
        return vae

    def load(self, directory) -> ConditionalVAE:
        return ConditionalVAE.load(directory)

    def outputs(self, vae) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(1)
        z, x = torch.randn(5, 8, generator=g), torch.rand(5, 3, 16, 16, generator=g)
        return [vae(z, Y), *vae.encode(x, Y)]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"cardinalities": (3,)}, "equal length"),
        ({"attribute_names": (), "cardinalities": ()}, "non-empty"),
        ({"cardinalities": (3, 0)}, "cardinality"),
        ({"image_size": 48}, "image_size"),
        ({"arch": "unet"}, "arch"),
        ({"channels": 2}, "channels"),
        ({"z_dim": 0}, "z_dim"),
        ({"e_width": 0}, "e_width"),
    ],
)
def test_config_validation(changes, message):
    kwargs = {"attribute_names": ("class", "colour"), "cardinalities": (3, 4), **changes}
    with pytest.raises(ValueError, match=message):
        VAEConfig(**kwargs)


def test_decoder_config_carries_the_shared_fields():
    cfg = tiny("resnet", 32, 1)
    dec = cfg.decoder_config()
    for name in ("attribute_names", "cardinalities", "arch", "image_size", "channels", "z_dim", "embed_dim"):
        assert getattr(dec, name) == getattr(cfg, name)
    assert dec.g_width == cfg.g_width and dec.max_width == cfg.max_width
