"""The SR net: shapes at ×1/×2/×4, bicubic (or the identity) before training, save/load round trips."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from models.sr import ROLES, SRComponent, SRConfig, SRNet, interpolation_taps, run_net


def _images(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    # values kept inside [40, 200]: bicubic overshoot never clips, so Pillow and the net agree to rounding
    return np.random.default_rng(seed).integers(40, 200, size=(n, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_output_is_scale_times_the_input_for_non_square_batches(scale):
    net = SRNet(SRConfig(scale=scale, width=8, blocks=1))
    out = net(torch.rand(3, 3, 10, 14))
    assert out.shape == (3, 3, 10 * scale, 14 * scale)
    assert run_net(net, _images(2, 10, 14)).shape == (2, 10 * scale, 14 * scale, 3)


@pytest.mark.parametrize("scale", [2, 4])
def test_an_untrained_net_is_bicubic_interpolation_away_from_the_border(scale):
    image = _images(1, 20, 24, seed=scale)
    ours = run_net(SRNet(SRConfig(scale=scale)), image)[0].astype(int)
    pillow = np.asarray(Image.fromarray(image[0]).resize((24 * scale, 20 * scale), Image.Resampling.BICUBIC))
    inner = slice(3 * scale, -3 * scale)
    assert np.abs(ours[inner, inner] - pillow[inner, inner].astype(int)).max() <= 1


def test_an_untrained_restorer_is_the_identity():
    image = _images(2, 16, 16)
    assert np.array_equal(run_net(SRNet(SRConfig(scale=1, width=8)), image), image)


def test_interpolation_taps_sum_to_one_and_mirror():
    for scale in (2, 4):
        taps = interpolation_taps(scale)
        assert np.allclose(taps.sum(axis=1), 1.0)
        assert np.allclose(taps, taps[::-1, ::-1])  # the sub-positions lie symmetrically about the pixel


def test_config_refuses_other_scales_and_empty_widths():
    with pytest.raises(ValueError, match="scale"):
        SRConfig(scale=3)
    with pytest.raises(ValueError, match="width"):
        SRConfig(scale=2, width=2)


def _trained_looking(scale: int, seed: int) -> SRNet:
    torch.manual_seed(seed)
    net = SRNet(SRConfig(scale=scale, width=8, blocks=1))
    with torch.no_grad():
        net.tail.weight.normal_(0, 0.05)  # a tail that is not zero, as after training
    return net.eval()


def test_net_save_load_round_trip(tmp_path):
    net = _trained_looking(4, 0)
    net.save(tmp_path / "x4")
    again = SRNet.load(tmp_path / "x4")
    assert again.config == net.config
    image = _images(1, 12, 12)
    assert np.array_equal(run_net(again, image), run_net(net, image))


def test_component_round_trip_and_refusals(tmp_path):
    component = SRComponent(nets={role: _trained_looking(scale, k) for k, (role, scale) in enumerate(ROLES.items())})
    component.save(tmp_path / "sr")
    again = SRComponent.load(tmp_path / "sr")
    image = _images(1, 12, 12)
    for role in ROLES:
        assert np.array_equal(run_net(again.nets[role], image), run_net(component.nets[role], image))
    with pytest.raises(ValueError, match="scale"):
        SRComponent(nets={**component.nets, "x2": component.nets["x4"]})
    with pytest.raises(ValueError, match="missing"):
        SRComponent(nets={"x2": component.nets["x2"]})
    shutil.rmtree(tmp_path / "sr" / "restore")
    with pytest.raises(FileNotFoundError, match="restore/"):
        SRComponent.load(tmp_path / "sr")


def test_a_config_with_an_unknown_key_is_refused(tmp_path):
    net = _trained_looking(2, 0)
    net.save(tmp_path / "x2")
    (tmp_path / "x2" / "config.json").write_text('{"scale": 2, "width": 8, "blocks": 1, "widht": 9}')
    with pytest.raises(ValueError, match="widht"):
        SRNet.load(tmp_path / "x2")
