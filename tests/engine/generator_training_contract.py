"""A contract every generator trainer meets, run against the GAN's and the VAE's (``TestXLoop(TrainerContract)``).

They share one loop (``engine.training.scaffold``): step and time budgets, a history of means, periodic
checkpoints, a resume that ends exactly where an uninterrupted run ends, and one that refuses a checkpoint of
another kind, architecture, seed, training settings or data.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from engine.training.scaffold import LoopConfig
from tests.engine.coloured_squares import colour_dataset


def without_seconds(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


class TrainerContract:
    training_cls: type  # the GeneratorTraining subclass, where a crash is simulated
    model: str  # the model's name in messages, e.g. "GAN"

    def config(self, **changes):
        """A tiny model config for 16x16 RGB images of one attribute with 3 values."""
        raise NotImplementedError

    def loop(self, **settings) -> LoopConfig:
        """The trainer's config with these loop settings (batch size 8 unless given)."""
        raise NotImplementedError

    def train(self, images, labels, loop: LoopConfig, *, config=None, **kwargs):
        raise NotImplementedError

    def weights(self, result) -> dict[str, torch.Tensor]:
        """Every trained network's state, by name."""
        raise NotImplementedError

    def run(self, loop: LoopConfig, *, n: int = 64, **kwargs):
        images, labels = colour_dataset(n)
        return self.train(images, labels, loop, show_progress=False, **kwargs)

    def assert_same_run(self, a, b) -> None:
        assert a.steps == b.steps
        wa, wb = self.weights(a), self.weights(b)
        assert wa.keys() == wb.keys()
        assert all(torch.equal(wa[k], wb[k]) for k in wa), "weights differ"
        assert without_seconds(a.history) == without_seconds(b.history)

    # ------------------------------------------------------------------------------------------ budgets, history

    def test_history_records_the_mean_of_the_steps_since_the_last_record(self):
        per_step = self.run(self.loop(steps=6, log_every=1), seed=3)
        every = self.run(self.loop(steps=6, log_every=4), seed=3)  # records at 4 and at the last step
        assert [r["step"] for r in per_step.history] == [1, 2, 3, 4, 5, 6]
        assert [r["step"] for r in every.history] == [4, 6]
        for key in self.training_cls.metrics:
            values = [r[key] for r in per_step.history]
            assert every.history[0][key] == pytest.approx(np.mean(values[:4]), rel=1e-5)
            assert every.history[1][key] == pytest.approx(np.mean(values[4:]), rel=1e-5)
        self.assert_same_run(self.run(self.loop(steps=6, log_every=1), seed=3), per_step)  # same seed, same run
        assert not per_step.stopped_early

    def test_a_time_budget_stop_is_recorded(self):
        result = self.run(self.loop(steps=1000, max_seconds=1e-6, log_every=50), n=32)
        assert result.steps == 1 and result.stopped_early
        # the steps since the last record make one more record where the trainer keeps a stopped tail
        expected = [1] if self.training_cls.records_stopped_tail else []
        assert [r["step"] for r in result.history] == expected

    # ------------------------------------------------------------------------------------------ checkpoints

    def test_resumed_run_equals_uninterrupted_run(self, tmp_path):
        loop = self.loop(steps=6, log_every=1)
        full = self.run(loop, seed=5)
        first = self.run(dataclasses.replace(loop, steps=3), seed=5, checkpoint_dir=tmp_path)
        assert (tmp_path / "checkpoint.pt").is_file() and first.steps == 3
        resumed = self.run(loop, seed=5, checkpoint_dir=tmp_path, resume=True)
        self.assert_same_run(full, resumed)

    def test_history_means_after_a_resume_cover_only_the_steps_run(self, tmp_path):
        """A run stopped between two records and resumed must not divide the next record by steps it did not
        run: each record is the mean over the steps since the previous record."""
        key = self.training_cls.metrics[0]
        losses = [r[key] for r in self.run(self.loop(steps=6, log_every=1), seed=3).history]
        loop = self.loop(steps=6, log_every=4)
        first = self.run(dataclasses.replace(loop, steps=3), seed=3, checkpoint_dir=tmp_path)
        assert [r["step"] for r in first.history] == [3]
        assert first.history[0][key] == pytest.approx(np.mean(losses[:3]), rel=1e-5)
        resumed = self.run(loop, seed=3, checkpoint_dir=tmp_path, resume=True)
        assert [r["step"] for r in resumed.history] == [3, 4, 6]
        assert resumed.history[1][key] == pytest.approx(losses[3], rel=1e-5)  # step 4 alone
        assert resumed.history[2][key] == pytest.approx(np.mean(losses[4:6]), rel=1e-5)

    def test_a_killed_run_resumes_from_its_last_periodic_checkpoint(self, tmp_path, monkeypatch):
        loop = self.loop(steps=6, checkpoint_every=2, log_every=1)
        full = self.run(loop, seed=4)
        step = self.training_cls.step

        def killed_after_five(training, done, rng):
            if done == 5:
                raise KeyboardInterrupt
            return step(training, done, rng)

        with monkeypatch.context() as m:
            m.setattr(self.training_cls, "step", killed_after_five)
            with pytest.raises(KeyboardInterrupt):
                self.run(loop, seed=4, checkpoint_dir=tmp_path)
        assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["step"] == 4
        self.assert_same_run(full, self.run(loop, seed=4, checkpoint_dir=tmp_path, resume=True))

    def test_a_schema_1_checkpoint_resumes_as_before(self, tmp_path):
        """Checkpoints written before the trainers shared one loop kept each network and optimiser at the top
        level; the GAN's had no kind and kept its config under gan_config."""
        loop = self.loop(steps=5, log_every=2)
        full = self.run(loop, seed=6)
        self.run(dataclasses.replace(loop, steps=2), seed=6, checkpoint_dir=tmp_path)
        state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
        old = {key: state[key] for key in ("step", "seconds", "seed", "train_config", "rng", "history")}
        old.update(schema_version=1, **state["networks"], **state["optimisers"])
        if state["kind"] == "gan":
            old["gan_config"] = state["config"]
        else:
            old.update(kind=state["kind"], config=state["config"])
        torch.save(old, tmp_path / "checkpoint.pt")
        self.assert_same_run(full, self.run(loop, seed=6, checkpoint_dir=tmp_path, resume=True))

    # ------------------------------------------------------------------------------------------ refusals

    def test_resume_refuses_a_missing_foreign_or_different_checkpoint(self, tmp_path):
        small = self.loop(steps=1, batch_size=4)
        with pytest.raises(FileNotFoundError, match=r"no checkpoint\.pt"):
            self.run(small, n=16, checkpoint_dir=tmp_path, resume=True)
        self.run(small, n=16, checkpoint_dir=tmp_path)
        path = tmp_path / "checkpoint.pt"
        with pytest.raises(ValueError, match=f"different {type(self.config()).__name__}"):
            self.run(small, n=16, checkpoint_dir=tmp_path, resume=True, config=self.config(z_dim=4))
        with pytest.raises(ValueError, match=r"seed \(0 → 1\)"):
            self.run(small, n=16, checkpoint_dir=tmp_path, resume=True, seed=1)
        with pytest.raises(ValueError, match=r"train_config\.batch_size \(4 → 8\)"):
            self.run(self.loop(steps=1), n=16, checkpoint_dir=tmp_path, resume=True)
        with pytest.raises(ValueError, match="training images"):
            self.run(small, n=17, checkpoint_dir=tmp_path, resume=True)
        state = torch.load(path, weights_only=False)
        torch.save({**state, "kind": "other"}, path)
        with pytest.raises(ValueError, match=f"not a {self.model} checkpoint"):
            self.run(small, n=16, checkpoint_dir=tmp_path, resume=True)
        torch.save(state, path)
        # how long it trains, how often it logs and saves may change
        longer = self.run(
            self.loop(steps=3, batch_size=4, log_every=1, checkpoint_every=1),
            n=16,
            checkpoint_dir=tmp_path,
            resume=True,
        )
        assert longer.steps == 3

    def test_bad_conditions_are_refused(self):
        images, labels = colour_dataset(16)
        small = self.loop(steps=1, batch_size=4)
        for bad in (labels + 5, labels - 1):
            with pytest.raises(ValueError, match="outside"):
                self.train(images, bad, small, show_progress=False)
        with pytest.raises(ValueError, match=f"the {self.model} is configured for"):
            self.train(images[:, :8, :8], labels, small, show_progress=False)
        for bad in (np.concatenate([labels, labels], axis=1), labels[:10]):
            with pytest.raises(ValueError, match=r"need \(N, 1\) conditions"):
                self.train(images, bad, small, show_progress=False)

    @pytest.mark.parametrize(
        ("changes", "message"),
        [
            ({"steps": 0}, "steps"),
            ({"batch_size": 1}, "batch_size"),
            ({"max_seconds": 0.0}, "max_seconds"),
            ({"checkpoint_every": -1}, "checkpoint_every"),
            ({"log_every": 0}, "log_every"),
            ({"device": "tpu"}, "device"),
        ],
    )
    def test_loop_settings_are_validated(self, changes, message):
        with pytest.raises(ValueError, match=message):
            self.loop(**changes)
