"""The generator study on a tiny in-memory dataset: runs, resume, evaluation report, judges cache, targets, CLI."""

import dataclasses
import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import engine.evaluation.generator_runs as runs
import engine.evaluation.generator_study as study
from engine.cli import main
from engine.evaluation.generator_runs import encode, load_dataset, load_run_generator, read_run, train_run
from engine.evaluation.generator_study import HEADLINE, evaluate_run, format_benchmark, targets
from engine.training.gan import GANTrainConfig, diffaugment_default, train_gan
from engine.training.vae import VAETrainConfig, train_vae
from features.image_datasets import ImageDataset
from models.gan import GANConfig, Generator
from models.io import config_from_dict
from models.vae import ConditionalVAE, VAEConfig

# 24 held-out images give 128-d features a singular covariance; frechet_distance handles that (and warns)
pytestmark = pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")

SIZE, GAP, COLUMNS = 32, 2, 8
CLASSES = {"top": 50, "middle": 40, "bottom": 30}  # images per class, so the contact sheet's row order is known


def bars_dataset() -> ImageDataset:
    """120 grey 32x32 images: a bright bar at the top, middle or bottom (the class) over faint noise.
    Every 5th image is held out (24 test, 96 training)."""
    rng = np.random.default_rng(0)
    labels = [name for name, n in CLASSES.items() for _ in range(n)]
    rows = {"top": 4, "middle": 14, "bottom": 24}
    images = rng.integers(0, 40, (len(labels), SIZE, SIZE, 1)).astype(np.uint8)
    for k, name in enumerate(labels):
        images[k, rows[name] : rows[name] + 4, 4:28] = 230
    return ImageDataset(
        name="bars",
        images=images,
        labels=pd.DataFrame({"class": labels}),
        attributes=("class",),
        is_test=np.arange(len(labels)) % 5 == 0,
        rule="three bar positions",
    )


@pytest.fixture(scope="module")
def ds() -> ImageDataset:
    return bars_dataset()


def tiny_run(ds: ImageDataset, out: Path, model: str = "gan", steps: int = 3, **kwargs) -> dict:
    return train_run(
        ds, out, model=model, steps=steps, batch_size=8, width=8, checkpoint_every=0, show_progress=False, **kwargs
    )


@pytest.fixture(scope="module")
def gan_run(ds, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study") / "gan"
    tiny_run(ds, out, "gan")
    return out


@pytest.fixture(scope="module")
def evaluated(ds, gan_run) -> tuple[Path, Path, dict]:
    judges_dir = gan_run.parent / "judges"
    report = evaluate_run(gan_run, ds, judges_dir=judges_dir, samples=50, classifier_epochs=1, show_progress=False)
    return gan_run, judges_dir, report


# ---------------------------------------------------------------------------------------------- training


@pytest.mark.parametrize("model", ["gan", "vae"])
def test_train_run_writes_run_json_and_a_loadable_model(ds, tmp_path, model):
    info = tiny_run(ds, tmp_path / model, model, data_path="/data/bars")
    on_disk = json.loads((tmp_path / model / "run.json").read_text())
    assert on_disk == read_run(tmp_path / model)
    assert json.loads(json.dumps(info)) == on_disk  # what train_run returns is what it wrote
    assert set(info) == {
        "schema_version",
        "dataset",
        "data_path",
        "rule",
        "train_images",
        "test_images",
        "encoder",
        "model",
        "diffaugment",
        "model_config",
        "train_config",
        "seed",
        "steps",
        "training_seconds",
        "stopped_early",
        "wall_seconds_this_call",
        "history",
        "torch_threads",
    }
    assert info["schema_version"] == runs.RUN_SCHEMA
    assert (info["dataset"], info["data_path"], info["rule"]) == ("bars", "/data/bars", "three bar positions")
    assert (info["train_images"], info["test_images"]) == (96, 24)
    assert info["encoder"]["values"] == {"class": ["bottom", "middle", "top"]}
    assert (info["model"], info["steps"], info["seed"], info["stopped_early"]) == (model, 3, 0, False)
    assert info["diffaugment"] is (model == "gan")  # 96 training images: DiffAugment on by default, GAN only
    mc, tc = on_disk["model_config"], on_disk["train_config"]
    assert (mc["image_size"], mc["channels"], mc["g_width"], mc["cardinalities"]) == (32, 1, 8, [3])
    assert (tc["steps"], tc["batch_size"], tc["checkpoint_every"]) == (3, 8, 0)
    assert [r["step"] for r in info["history"]] == [3]
    assert (tmp_path / model / "checkpoint" / "checkpoint.pt").is_file()

    g = load_run_generator(tmp_path / model, info)
    assert isinstance(g, Generator if model == "gan" else ConditionalVAE) and not g.training
    with torch.no_grad():
        x = g(torch.randn(3, g.config.z_dim), torch.tensor([[0], [1], [2]]))
    assert x.shape == (3, 1, SIZE, SIZE) and x.abs().max() <= 1.0


def reference_run(ds: ImageDataset, info: dict, model: str):
    """The run rebuilt from its run.json alone, uninterrupted and logging every step."""
    _, codes = encode(ds)
    train = ~ds.is_test
    if model == "gan":
        mc, tc = (
            config_from_dict(GANConfig, info["model_config"]),
            config_from_dict(GANTrainConfig, info["train_config"]),
        )
        result = train_gan(
            ds.images[train],
            codes[train],
            mc,
            dataclasses.replace(tc, log_every=1),
            seed=info["seed"],
            show_progress=False,
        )
        return result.generator_ema, [r["loss_d"] for r in result.history], "loss_d"
    mc, tc = config_from_dict(VAEConfig, info["model_config"]), config_from_dict(VAETrainConfig, info["train_config"])
    result = train_vae(
        ds.images[train], codes[train], mc, dataclasses.replace(tc, log_every=1), seed=info["seed"], show_progress=False
    )
    return result.vae, [r["loss"] for r in result.history], "loss"


@pytest.mark.parametrize("model", ["gan", "vae"])
def test_resumed_run_continues_to_more_steps_as_if_uninterrupted(ds, tmp_path, model):
    tiny_run(ds, tmp_path, model, steps=3, seed=2)
    info = tiny_run(ds, tmp_path, model, steps=5, seed=2, resume=True)
    assert info["steps"] == 5 and info["train_config"]["steps"] == 5
    reference, per_step, key = reference_run(ds, info, model)
    resumed = load_run_generator(tmp_path, info)
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    # history: the 3-step record, then the mean of steps 4 and 5 only (the resumed part)
    assert [r["step"] for r in info["history"]] == [3, 5]
    assert info["history"][0][key] == pytest.approx(np.mean(per_step[:3]), rel=1e-5)
    assert info["history"][1][key] == pytest.approx(np.mean(per_step[3:5]), rel=1e-5)


def test_train_run_refuses_a_resume_without_a_run_and_an_unknown_model(ds, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no run\.json"):
        tiny_run(ds, tmp_path, resume=True)
    with pytest.raises(ValueError, match="model must be one of"):
        tiny_run(ds, tmp_path, "diffusion")


def test_resume_refuses_other_data_seed_or_training_settings(ds, tmp_path):
    tiny_run(ds, tmp_path, steps=2, seed=2)
    before = (tmp_path / "run.json").read_text()
    with pytest.raises(ValueError, match=r"seed \(2 → 3\)"):
        tiny_run(ds, tmp_path, steps=4, seed=3, resume=True)
    with pytest.raises(ValueError, match=r"train_config\.batch_size \(8 → 16\)"):
        train_run(ds, tmp_path, steps=4, batch_size=16, width=8, seed=2, resume=True, show_progress=False)
    with pytest.raises(ValueError, match="model"):
        tiny_run(ds, tmp_path, "vae", steps=4, seed=2, resume=True)
    assert (tmp_path / "run.json").read_text() == before  # a refused resume leaves the run as it was
    assert tiny_run(ds, tmp_path, steps=4, seed=2, resume=True)["steps"] == 4  # more steps: allowed


def test_read_run_refuses_other_schemas(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a generator run"):
        read_run(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"schema_version": runs.RUN_SCHEMA + 1}))
    with pytest.raises(ValueError, match="run schema"):
        read_run(tmp_path)


def test_diffaugment_is_on_below_20000_training_images():
    assert diffaugment_default(0) and diffaugment_default(96) and diffaugment_default(19_999)
    assert not diffaugment_default(20_000) and not diffaugment_default(60_000)


# ---------------------------------------------------------------------------------------------- evaluation


def test_report_gives_every_metric_beside_its_real_floor(evaluated):
    run, _, report = evaluated
    on_disk = json.loads((run / "report.json").read_text())
    assert on_disk["metrics"].keys() == report["metrics"].keys()
    assert (report["dataset"], report["model"], report["steps"], report["diffaugment"]) == ("bars", "gan", 3, True)
    assert report["samples"] == 24  # all the held-out images, fewer than the 50 asked for
    # every headline figure that format_report prints, the conditional accuracies and feature memorisation
    expected = {*HEADLINE, "accuracy_class", "accuracy_all", "memorisation_feature"}
    assert expected <= set(report["metrics"])
    for name, figure in on_disk["metrics"].items():
        assert {"generated", "real_floor"} <= set(figure), name
    assert report["memorisation_reference_images"] == 96  # the generator's own training split
    assert set(report["judges"]) == {"features", "judge"}
    assert not report["standard_fid"]["available"] or report["standard_fid"]["real_floor"] >= 0


def test_contact_sheet_has_a_sample_row_and_a_neighbour_row_per_class(evaluated, ds):
    run, _, _ = evaluated
    sheet = Image.open(run / "contact_sheet.png")
    assert sheet.mode == "L"  # grey images stay grey
    scale = 2  # 32x32 tiles are enlarged pixel for pixel to 64x64
    assert sheet.size == (scale * COLUMNS * (SIZE + GAP), scale * len(CLASSES) * (2 * SIZE + 3 * GAP))
    # rows are the classes, most frequent first
    assert (run / "contact_sheet.rows.txt").read_text().splitlines()[1:] == ["top", "middle", "bottom"]
    # under each sample sits a real training image, copied exactly
    pixels = np.asarray(sheet)[::scale, ::scale]
    train = ds.images[~ds.is_test, ..., 0]
    for r in range(len(CLASSES)):
        y = r * (2 * SIZE + 3 * GAP) + SIZE + GAP
        for c in range(COLUMNS):
            tile = pixels[y : y + SIZE, c * (SIZE + GAP) : c * (SIZE + GAP) + SIZE]
            assert (train == tile).all(axis=(1, 2)).any()


def test_judges_are_cached_and_reused_for_the_same_key(evaluated, ds, monkeypatch):
    run, judges_dir, first = evaluated
    meta = json.loads((judges_dir / "judges.json").read_text())
    assert meta["key"] == {"dataset": "bars", "rule": "three bar positions", "images": 120, "epochs": 1}
    assert (judges_dir / "features").is_dir() and (judges_dir / "judge").is_dir()

    def no_training(*args, **kwargs):
        raise AssertionError("the judges should have been reused, not trained again")

    monkeypatch.setattr(study, "train_classifier", no_training)
    again = evaluate_run(run, ds, judges_dir=judges_dir, samples=50, classifier_epochs=1, show_progress=False)
    assert again["judges"] == first["judges"]
    for key in ("frechet_distance", "coverage", "accuracy_class"):
        assert again["metrics"][key]["generated"] == pytest.approx(first["metrics"][key]["generated"])
    # another key (more epochs) trains them again
    with pytest.raises(AssertionError, match="reused"):
        evaluate_run(run, ds, judges_dir=judges_dir, samples=50, classifier_epochs=2, show_progress=False)


# ---------------------------------------------------------------------------------------------- targets


def report(fd: float, fd_floor: float, coverage: float, share: float = 0.95, acc_class=0.9, acc_colour=0.9) -> dict:
    return {
        "metrics": {
            "frechet_distance": {"generated": fd, "real_floor": fd_floor},
            "coverage": {"generated": coverage, "real_floor": 0.9},
            "accuracy_class": {"generated": acc_class, "real_floor": 0.95, "share_of_real": share},
            "accuracy_colour": {"generated": acc_colour, "real_floor": 0.95, "share_of_real": 1.0},
        }
    }


def verdicts(dataset: str, gan: dict, vae: dict | None) -> dict[str, bool]:
    return {t["target"]: t["met"] for t in targets(dataset, gan, vae)}


def test_fashion_mnist_targets_pass_and_miss_as_expected():
    good, vae = report(fd=2.0, fd_floor=1.0, coverage=0.8), report(fd=4.0, fd_floor=1.0, coverage=0.5)
    met = verdicts("fashion_mnist", good, vae)
    assert len(met) == 5 and all(met.values())
    checks = targets("fashion_mnist", good, vae)
    assert [t["value"] for t in checks] == pytest.approx([0.95, 0.8, 2.0, 0.5, 0.3])

    bad = report(fd=3.5, fd_floor=1.0, coverage=0.6, share=0.85)
    met = verdicts("fashion_mnist", bad, vae)
    assert met == {
        "GAN class accuracy / real-image accuracy ≥ 0.90": False,
        "GAN coverage ≥ 0.7": False,
        "GAN Fréchet distance ≤ 3 × real floor": False,
        "GAN Fréchet distance / VAE's < 1": True,
        "GAN coverage − VAE's > 0": True,
    }
    # the limits themselves: "≥" and "≤" targets are met at the limit
    edge = verdicts("fashion_mnist", report(fd=3.0, fd_floor=1.0, coverage=0.7, share=0.9), None)
    assert edge == dict.fromkeys(edge, True) and len(edge) == 3


def test_strict_targets_are_missed_on_a_tie():
    """ "< 1" and "> 0" are strict: a GAN exactly as good as the VAE has not beaten it."""
    same = report(fd=2.0, fd_floor=1.0, coverage=0.6)
    met = verdicts("hm", same, report(fd=2.0, fd_floor=1.0, coverage=0.6))
    assert met == {"GAN Fréchet distance / VAE's < 1": False, "GAN coverage − VAE's > 0": False}


def test_myntra_targets_and_a_dataset_without_its_own():
    met = verdicts("myntra", report(2.0, 1.0, 0.5, acc_class=0.85, acc_colour=0.79), None)
    assert met == {"GAN colour accuracy ≥ 0.80": False, "GAN class accuracy ≥ 0.85": True}
    assert targets("demo", report(2.0, 1.0, 0.5), None) == []


def test_format_benchmark_says_pass_or_miss():
    checks = targets("myntra", report(2.0, 1.0, 0.5, acc_class=0.5, acc_colour=0.9), None)
    text = format_benchmark({"dataset": "myntra", "rule": "r", "seconds_per_model": 1.0, "runs": {}, "targets": checks})
    assert "PASS  GAN colour accuracy ≥ 0.80: 0.9000" in text
    assert "MISS  GAN class accuracy ≥ 0.85: 0.5000" in text


# ---------------------------------------------------------------------------------------------- datasets and CLI


def write_fashion_mnist(folder: Path, n_train: int = 48, n_test: int = 12) -> Path:
    """Fake IDX files (the four official names): class k has a bright bar at row 3 + 7k."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 3
        images = rng.integers(0, 30, (n, 28, 28)).astype(np.uint8)
        for k, lab in enumerate(labels):
            images[k, 3 + 7 * lab : 7 + 7 * lab, 4:24] = 220
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as fh:
            fh.write(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as fh:
            fh.write(struct.pack(">II", 2049, n) + labels.astype(np.uint8).tobytes())
    return folder


def test_load_dataset_reads_fashion_mnist_and_refuses_unknown_names(tmp_path):
    folder = write_fashion_mnist(tmp_path / "fmnist")
    full = load_dataset("fashion_mnist", folder)
    assert full.name == "fashion_mnist" and full.images.shape == (60, 32, 32, 1)
    assert int(full.is_test.sum()) == 12
    assert set(full.labels["class"]) == {"T-shirt/top", "Trouser", "Pullover"}
    few = load_dataset("fashion_mnist", folder, max_images=20)
    assert len(few.images) == len(few.labels) == len(few.is_test) == 20
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        load_dataset("cifar", folder)
    with pytest.raises(ValueError, match="both need at least 2"):
        load_dataset("fashion_mnist", write_fashion_mnist(tmp_path / "tiny", n_test=1))


def test_cli_trains_and_evaluates_a_generator(tmp_path, capsys):
    folder = write_fashion_mnist(tmp_path / "fmnist")
    run = tmp_path / "runs" / "gan"
    train = ["train", "generator", "--dataset", "fashion_mnist", "--data", str(folder), "--out", str(run)]
    assert main([*train, "--steps", "2", "--batch-size", "8", "--width", "8", "--no-progress"]) == 0
    info = read_run(run)
    assert info["steps"] == 2 and info["data_path"] == str(folder.resolve())
    assert info["model_config"]["g_width"] == 8 and info["train_config"]["batch_size"] == 8
    assert "vitrine evaluate generator --run" in capsys.readouterr().out

    evaluate = ["evaluate", "generator", "--run", str(run), "--samples", "50", "--classifier-epochs", "1"]
    assert main([*evaluate, "--no-progress"]) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["dataset"] == "fashion_mnist" and report["samples"] == 12
    assert (tmp_path / "runs" / "judges-fashion_mnist" / "judges.json").is_file()  # beside the run by default
    out = capsys.readouterr().out
    assert "GAN on fashion_mnist: 2 steps" in out and "frechet_distance" in out

    assert main(["evaluate", "generator", "--run", str(tmp_path / "missing"), "--no-progress"]) == 2
