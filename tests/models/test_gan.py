import pytest
import torch

from models.gan import Discriminator, GANConfig, Generator, load_discriminator, load_generator, save_module


def tiny(arch: str = "dcgan", size: int = 16) -> GANConfig:
    return GANConfig(
        attribute_names=("class", "colour"),
        cardinalities=(3, 4),
        image_size=size,
        z_dim=8,
        embed_dim=4,
        g_width=4,
        d_width=4,
        max_width=16,
        arch=arch,
    )


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
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


def test_save_load_round_trip(tmp_path):
    cfg = tiny()
    g, d = Generator(cfg).eval(), Discriminator(cfg).eval()
    save_module(g, cfg, tmp_path, "generator_ema")
    save_module(d, cfg, tmp_path, "discriminator")
    g2, d2 = load_generator(tmp_path), load_discriminator(tmp_path)
    assert g2.config == cfg
    z, y = torch.randn(3, 8), torch.tensor([[0, 1], [1, 2], [2, 3]])
    assert torch.equal(g(z, y), g2(z, y))
    assert torch.allclose(d(g(z, y), y), d2(g(z, y), y))


def test_config_validation_says_what_is_wrong():
    with pytest.raises(ValueError, match="image_size"):
        GANConfig(attribute_names=("class",), cardinalities=(3,), image_size=48)
    with pytest.raises(ValueError, match="equal length"):
        GANConfig(attribute_names=("class", "colour"), cardinalities=(3,))


def test_a_loaded_discriminator_has_plain_weights_and_scores_as_before(tmp_path):
    from torch.nn.utils.spectral_norm import SpectralNorm

    cfg = tiny()
    d = Discriminator(cfg).train()
    x = torch.randn(4, 3, cfg.image_size, cfg.image_size)
    y = torch.tensor([[0, 1], [1, 2], [2, 3], [0, 0]])
    for _ in range(3):  # power iterations move u and v away from their initial values
        d(x, y)
    d.eval()
    save_module(d, cfg, tmp_path, "discriminator")
    loaded = load_discriminator(tmp_path)
    hooks = [h for m in loaded.modules() for h in m._forward_pre_hooks.values()]
    assert not any(isinstance(h, SpectralNorm) for h in hooks)  # no hook rewrites weights on each call
    assert not any(name.endswith("weight_orig") for name, _ in loaded.named_parameters())
    torch.testing.assert_close(loaded(x, y), d(x, y), rtol=1e-5, atol=1e-5)
    # gradients reach the input (preference maximisation backpropagates through D into the latent code)
    xg = x.clone().requires_grad_(True)
    loaded(xg, y).sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0
