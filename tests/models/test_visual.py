"""The visual encoder component: shapes, attributes as an optional input, save/load round trip."""

import numpy as np
import pytest
import torch

from models.visual import VisualCalibration, VisualComponent, VisualEncoder, VisualEncoderConfig, factors_digest


def _component(cardinalities=()) -> VisualComponent:
    torch.manual_seed(0)
    enc = VisualEncoder(VisualEncoderConfig(feature_dim=8, item_dim=4, hidden=16, cardinalities=cardinalities)).eval()
    return VisualComponent(
        encoder=enc,
        calibration=VisualCalibration(score_std=0.5, realism_mean=-1.0, realism_std=2.0),
        item_ids=np.array(["a", "b", "c"]),
        item_vectors=np.arange(12, dtype=np.float32).reshape(3, 4),
        factors_digest=factors_digest(np.ones((3, 4), dtype=np.float32)),
    )


@pytest.mark.parametrize("cardinalities", [(), (3, 2)])
def test_save_load_round_trip_gives_the_same_vectors(tmp_path, cardinalities):
    comp = _component(cardinalities)
    comp.save(tmp_path / "visual")
    back = VisualComponent.load(tmp_path / "visual")
    x = torch.randn(5, 8)
    y = torch.tensor([[0, 1], [2, 0], [1, 1], [0, 0], [2, 1]]) if cardinalities else None
    with torch.no_grad():
        assert torch.equal(comp.encoder(x, y), back.encoder(x, y))
    assert back.calibration == comp.calibration
    assert back.factors_digest == comp.factors_digest
    np.testing.assert_array_equal(back.item_ids, comp.item_ids)
    np.testing.assert_array_equal(back.item_vectors, comp.item_vectors)


def test_an_encoder_that_reads_attributes_refuses_to_run_without_them():
    comp = _component((3, 2))
    with pytest.raises(ValueError, match="attribute codes"):
        comp.encoder(torch.randn(2, 8))


def test_the_digest_tells_factor_matrices_apart():
    a = np.ones((3, 4), dtype=np.float32)
    assert factors_digest(a) == factors_digest(a.copy()) != factors_digest(a * 2)


def test_calibration_scales_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        VisualCalibration(score_std=0.0, realism_mean=0.0, realism_std=1.0)
