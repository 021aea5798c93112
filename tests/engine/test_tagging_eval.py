"""The tagging evaluation: known-answer metrics, and a bundle measured exactly as it serves."""

import json

import numpy as np
import pytest

from engine.cli import main
from engine.evaluation.tagging import accuracies, evaluate_dataset_tagging, majority
from models.io import read_json


def test_majority_answers_the_most_frequent_training_value_of_each_attribute():
    train = np.array([[0, 2], [1, 2], [1, 0], [1, 2]])
    test = np.array([[1, 2], [0, 2], [1, 1], [1, 2]])
    values, acc, acc_all = majority(train, test)
    assert values.tolist() == [1, 2]
    assert acc.tolist() == [0.75, 0.75] and acc_all == 0.5


def test_accuracies_count_top_1_top_k_and_every_attribute():
    p_class = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]])
    p_colour = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    codes = np.array([[0, 0], [1, 1], [1, 0]])
    out = accuracies([p_class, p_colour], codes, top_k=2)
    assert out["accuracy"] == pytest.approx([1 / 3, 1.0])
    assert out["top_k_accuracy"] == pytest.approx([1.0, 1.0])
    assert out["all"] == pytest.approx(1 / 3)


def test_the_bundle_is_measured_as_it_serves_on_the_photos_its_training_held_out(trained_artifacts, tmp_path, capsys):
    root, version = trained_artifacts
    out = tmp_path / "tagging.json"
    assert main(["evaluate", "tagging", "--artifacts", str(root), "--out", str(out), "--no-progress"]) == 0
    report = json.loads(out.read_text())
    manifest = read_json(root / version / "classifier" / "manifest.json")
    assert report["bundle_version"] == version and report["source"] == "bundle"
    assert report["test_images"] == manifest["metrics"]["holdout_items"] > 0
    assert report["train_images"] == manifest["metrics"]["train_items"]
    for name, a in report["attributes"].items():
        # the same photos, read from their files as an upload is, through serving's Tagger: the training's figure
        assert a["accuracy"] == pytest.approx(manifest["metrics"][f"accuracy_{name}"], abs=1e-9)
        assert 0.0 <= a["majority_accuracy"] <= 1.0 and a["chance"] == pytest.approx(1 / a["values"])
    printed = capsys.readouterr().out
    assert "majority" in printed and "pattern" in printed


def test_a_dataset_classifier_is_trained_on_its_split_within_the_budget(demo_store, tmp_path):
    report = evaluate_dataset_tagging(
        "demo", demo_store, epochs=1, seconds=30, max_images=160, out=tmp_path / "t.json", show_progress=False
    )
    assert report["source"] == "dataset" and set(report["attributes"]) == {"class", "colour", "pattern"}
    assert report["train_images"] + report["test_images"] + report["test_photos_with_unseen_values"] == 160
    assert report["classifier"]["stopped_early"] in (True, False) and report["classifier"]["seconds"] <= 60
    assert json.loads((tmp_path / "t.json").read_text())["attributes"] == report["attributes"]


def test_data_without_a_dataset_is_refused_saying_what_to_give(tmp_path):
    assert main(["evaluate", "tagging", "--data", str(tmp_path)]) == 2


def test_the_budgeted_schedule_is_torchs_one_cycle_on_progress():
    torch = pytest.importorskip("torch")
    from engine.training.classifier import one_cycle

    assert one_cycle(0.0, 2e-3) == pytest.approx((2e-3 / 25, 0.95))
    assert one_cycle(0.3, 2e-3) == pytest.approx((2e-3, 0.85))
    assert one_cycle(1.0, 2e-3) == pytest.approx((2e-3 / 25 / 1e4, 0.95))
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=1001)
    for step in range(1001):
        if step % 100 == 0:
            lr, beta1 = one_cycle(step / 1000, 2e-3)
            assert opt.param_groups[0]["lr"] == pytest.approx(lr, rel=0.02, abs=1e-7)
            assert opt.param_groups[0]["betas"][0] == pytest.approx(beta1, abs=2e-3)
        opt.step()
        sched.step()
