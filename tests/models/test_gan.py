import pytest
import torch

from models.gan import Discriminator, GANConfig, Generator
from tests.models.saved_network import TINY, SavedNetworkContract, Y


def tiny(arch: str = "dcgan", size: int = 16) -> GANConfig:
    return GANConfig(**TINY, image_size=size, d_width=4, arch=arch)


@pytest.mark.parametrize("arch", ["dcgan", "resnet", "upsample"])
def test_shapes_and_range(arch):
    cfg = tiny(arch, 32)
    g, d = Generator(cfg).eval(), Discriminator(cfg).eval()
    z, y = torch.randn(5, 8), torch.tensor([[0, 1], [1, 2], [2, 3], [0, 0], [1, 1]])
    x = g(z, y)
    assert x.shape == (5, 3, 32, 32)
    assert x.abs().max() <= 1.0
    assert d(x, y).shape == (5,)


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_generator_output_changes_with_its_label_and_only_its_label(arch):
    torch.manual_seed(0)
    g = Generator(tiny(arch))
    # Conditional BN starts as plain BN (zero init); give the label embeddings some effect, as training would.
    for block in g.blocks:
        for m in block.modules():
            if hasattr(m, "gain") and isinstance(m.gain, torch.nn.Linear):
                torch.nn.init.normal_(m.gain.weight, std=0.5)
    g.eval()
    z = torch.randn(1, 8).repeat(2, 1)
    same = g(z, torch.tensor([[1, 2], [1, 2]]))
    assert torch.equal(same[0], same[1])  # eval mode: an image depends only on its own (z, y)
    other_class = g(z, torch.tensor([[1, 2], [2, 2]]))
    other_colour = g(z, torch.tensor([[1, 2], [1, 0]]))
    assert (other_class[0] - other_class[1]).abs().mean() > 1e-3
    assert (other_colour[0] - other_colour[1]).abs().mean() > 1e-3


def test_discriminator_projection_depends_on_the_label():
    torch.manual_seed(0)
    d = Discriminator(tiny()).eval()
    x = torch.rand(1, 3, 16, 16).repeat(2, 1, 1, 1)
    out = d(x, torch.tensor([[0, 0], [2, 3]]))
    assert not torch.isclose(out[0], out[1])


class TestGeneratorSaveLoad(SavedNetworkContract):
    weights = "generator_ema"

    def make(self) -> Generator:
        torch.manual_seed(0)
        g = Generator(tiny("resnet")).train()
        with torch.no_grad():
            g(torch.randn(5, 8), Y)  # moves the BatchNorm running statistics off their defaults
        return g

    def load(self, directory) -> Generator:
        return Generator.load(directory)

    def outputs(self, g) -> list[torch.Tensor]:
        return [g(torch.randn(5, 8, generator=torch.Generator().manual_seed(1)), Y)]


def test_a_generator_saved_under_another_name_loads_by_that_name(tmp_path):
    g = TestGeneratorSaveLoad().make().eval()
    g.save(tmp_path, name="generator")
    z = torch.randn(5, 8)
    assert torch.equal(Generator.load(tmp_path, name="generator")(z, Y), g(z, Y))
    with pytest.raises(FileNotFoundError):
        Generator.load(tmp_path)  # the default name is the EMA generator's


class TestDiscriminatorSaveLoad(SavedNetworkContract):
    weights = "discriminator"
    exact = False  # loading folds each spectral norm into its weight

    def make(self) -> Discriminator:
        torch.manual_seed(0)
        d = Discriminator(tiny()).train()
        for _ in range(3):  # power iterations move u and v away from their initial values
            d(torch.randn(5, 3, 16, 16), Y)
        return d

    def load(self, directory) -> Discriminator:
        return Discriminator.load(directory)

    def outputs(self, d) -> list[torch.Tensor]:
        return [d(torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(1)), Y)]


def test_config_validation_says_what_is_wrong():
    with pytest.raises(ValueError, match="image_size"):
        GANConfig(attribute_names=("class",), cardinalities=(3,), image_size=48)
    with pytest.raises(ValueError, match="equal length"):
        GANConfig(attribute_names=("class", "colour"), cardinalities=(3,))


def test_a_loaded_discriminator_has_plain_weights_and_scores_as_before(tmp_path):
    from torch.nn.utils.spectral_norm import SpectralNorm

    d = TestDiscriminatorSaveLoad().make().eval()
    x = torch.randn(5, 3, 16, 16)
    d.save(tmp_path)
    loaded = Discriminator.load(tmp_path)
    hooks = [h for m in loaded.modules() for h in m._forward_pre_hooks.values()]
    assert not any(isinstance(h, SpectralNorm) for h in hooks)  # no hook rewrites weights on each call
    assert not any(name.endswith("weight_orig") for name, _ in loaded.named_parameters())
    torch.testing.assert_close(loaded(x, Y), d(x, Y), rtol=1e-5, atol=1e-5)
    # gradients reach the input (preference maximisation backpropagates through D into the latent code)
    xg = x.clone().requires_grad_(True)
    loaded(xg, Y).sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0
