"""A contract every saved network meets, run against each one (``TestXSaveLoad(SavedNetworkContract)``).

``save(dir)`` writes ``config.json`` and one ``<name>.safetensors``, the on-disk format bundles and study runs
already hold; ``load(dir)`` rebuilds the network from them in eval mode with the same config and outputs, and
refuses a config with a key it does not know.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

# The architecture fields the GAN's and the VAE's tiny test configs share.
TINY = {
    "attribute_names": ("class", "colour"),
    "cardinalities": (3, 4),
    "z_dim": 8,
    "embed_dim": 4,
    "g_width": 4,
    "max_width": 16,
}
Y = torch.tensor([[0, 1], [1, 2], [2, 3], [0, 0], [1, 1]])  # (5, 2) codes within TINY's cardinalities


class SavedNetworkContract:
    weights: str  # the safetensors file's stem
    exact: bool = True  # outputs equal to the bit (False where loading folds parameters, e.g. spectral norm)

    def make(self) -> nn.Module:
        """A network whose state is off its initial values (BatchNorm statistics, spectral-norm vectors)."""
        raise NotImplementedError

    def load(self, directory: Path) -> nn.Module:
        raise NotImplementedError

    def outputs(self, net: nn.Module) -> list[Tensor]:
        raise NotImplementedError

    def test_round_trip_gives_the_same_network(self, tmp_path):
        net = self.make().eval()
        net.save(tmp_path)
        loaded = self.load(tmp_path)
        assert loaded.config == net.config and not loaded.training
        with torch.no_grad():
            for a, b in zip(self.outputs(net), self.outputs(loaded), strict=True):
                if self.exact:
                    assert torch.equal(a, b)
                else:
                    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)

    def test_files_are_the_bundle_format(self, tmp_path):
        net = self.make().eval()
        net.save(tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["config.json", f"{self.weights}.safetensors"])
        saved = load_file(str(tmp_path / f"{self.weights}.safetensors"))
        state = net.state_dict()
        assert saved.keys() == state.keys()
        assert all(torch.equal(saved[k], state[k]) for k in state)
        assert json.loads((tmp_path / "config.json").read_text())["cardinalities"] == list(net.config.cardinalities)

    def test_load_refuses_an_unknown_config_key(self, tmp_path):
        self.make().save(tmp_path)
        config = json.loads((tmp_path / "config.json").read_text())
        config["z_dimm"] = 8
        (tmp_path / "config.json").write_text(json.dumps(config))
        with pytest.raises(ValueError, match="z_dimm"):
            self.load(tmp_path)
