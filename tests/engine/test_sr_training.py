"""Training the SR nets: a known answer on smooth images, the bundle's sr/ component, `vitrine train sr`,
`vitrine evaluate sr|restore`, `vitrine bench sr` and `vitrine enhance`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from engine.artifacts.bundle import load_bundle
from engine.cli import main
from engine.serving.enhance import Enhancer
from engine.training.sr import SRTrainConfig, train_net
from features.degradations import downscale, upscale
from features.image_metrics import psnr
from models.sr import run_net


def smooth_images(n: int, size: int, seed: int) -> list[np.ndarray]:
    """Sums of three colour gratings of wavelength 5-9 px: smooth, but fine enough that bicubic blurs them."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    out = []
    for _ in range(n):
        img = np.full((size, size, 3), 128.0)
        for _ in range(3):
            theta, wavelength, phase = rng.uniform(0, np.pi), rng.uniform(5, 9), rng.uniform(0, 2 * np.pi)
            wave = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / wavelength + phase)
            img += wave[..., None] * rng.uniform(20, 40, size=3)
        out.append(np.clip(np.round(img), 0, 255).astype(np.uint8))
    return out


def test_a_few_steps_on_smooth_images_beat_bicubic_on_held_out_ones():
    train, test = smooth_images(24, 48, seed=0), smooth_images(8, 48, seed=1)
    config = SRTrainConfig(width=8, blocks=1, steps=30, batch_size=8, lr_patch=12, lr=5e-3)
    net, record = train_net("x2", train, config, seconds=600, seed=0, show_progress=False)
    assert record["steps"] == 30
    bicubic = np.mean([psnr(im, upscale(downscale(im, 2), 2), shave=2) for im in test])
    learned = np.mean([psnr(im, run_net(net, downscale(im, 2)[None])[0], shave=2) for im in test])
    assert learned > bicubic + 1.0, (learned, bicubic)


def test_training_is_seeded():
    images = smooth_images(6, 32, seed=2)
    config = SRTrainConfig(width=4, blocks=1, steps=3, batch_size=4, lr_patch=8)
    a, _ = train_net("restore", images, config, seconds=600, seed=3, show_progress=False)
    b, _ = train_net("restore", images, config, seconds=600, seed=3, show_progress=False)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert np.array_equal(pa.detach().numpy(), pb.detach().numpy())


def test_the_trained_bundle_carries_the_sr_component_with_its_figures(trained_artifacts):
    root, version = trained_artifacts
    bundle = load_bundle(root / version)
    assert bundle.sr is not None and set(bundle.sr.nets) == {"x2", "x4", "restore"}
    manifest = json.loads((root / version / "sr" / "manifest.json").read_text())
    assert manifest["hr_source"] == "drawings"  # the demo store is drawn at drawing_size
    assert {"x2", "x4", "restore"} <= set(manifest["metrics"])
    assert Enhancer.of_bundle(bundle).sizes == (64, 128, 256)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for k, image in enumerate(smooth_images(3, 48, seed=5)):
        Image.fromarray(image).save(folder / f"photo{k}.jpg", quality=30)
    (folder / "notes.png").write_bytes(b"not an image")
    return folder


def test_vitrine_enhance_writes_restored_photos_and_a_contact_sheet(trained_artifacts, photos, tmp_path, capsys):
    root, _ = trained_artifacts
    out = tmp_path / "out"
    assert main(["enhance", "--in", str(photos), "--out", str(out), "--artifacts", str(root), "--no-progress"]) == 0
    restored = sorted(p.name for p in out.glob("photo*.png"))
    assert restored == ["photo0.png", "photo1.png", "photo2.png"]
    assert Image.open(out / "photo0.png").size == (48, 48)
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.width > sheet.height  # three before/after pairs in one row
    assert "skipped notes.png" in capsys.readouterr().out


def test_vitrine_enhance_refuses_to_overwrite_the_originals(trained_artifacts, photos):
    root, _ = trained_artifacts
    assert main(["enhance", "--in", str(photos), "--out", str(photos), "--artifacts", str(root)]) == 2


@pytest.mark.parametrize("task", ["sr", "restore"])
def test_vitrine_evaluate_prints_and_writes_the_report(trained_artifacts, photos, tmp_path, capsys, task):
    root, version = trained_artifacts
    out = tmp_path / "report.json"
    args = ["evaluate", task, "--artifacts", str(root), "--dataset", "folder", "--data", str(photos)]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    report = json.loads(out.read_text())
    assert report["nets"]["bundle"] == version and report["split"] == "test"
    if task == "sr":
        assert set(report["results"]) == {"x2", "x4"}
        assert set(report["results"]["x4"]["methods"]) == {"bicubic", "lanczos", "sr"}
        assert "Set5" in capsys.readouterr().out
    else:
        first = next(iter(report["results"].values()))
        assert set(first["methods"]) == {"degraded", "median", "unsharp", "nlm", "network"}


def test_vitrine_bench_sr_reports_milliseconds(trained_artifacts, tmp_path):
    root, _ = trained_artifacts
    out = tmp_path / "bench.json"
    assert main(["bench", "sr", "--artifacts", str(root), "--repeats", "3", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["threads"] == 1 and report["results"]["sr x4 (64 → 256)"]["p50_ms"] > 0


def test_vitrine_train_sr_adds_a_new_bundle_sharing_the_rest(trained_artifacts, tmp_path):
    import shutil

    root, version = trained_artifacts
    copy = tmp_path / "artifacts"
    shutil.copytree(root, copy)
    assert main(["train", "sr", "--artifacts", str(copy), "--steps", "2", "--no-progress"]) == 0
    versions = sorted(p.name for p in copy.iterdir() if p.is_dir() and p.name != version and p.name[0].isdigit())
    assert len(versions) == 1
    new = load_bundle(copy / versions[0])
    assert new.sr is not None and new.manifest["retrained"] == ["sr"]
    assert new.manifest["config"]["sr"]["steps"] == 2
    assert (copy / versions[0] / "generator" / "generator_ema.safetensors").read_bytes() == (
        root / version / "generator" / "generator_ema.safetensors"
    ).read_bytes()


def test_vitrine_train_sr_on_a_dataset_writes_a_run_that_evaluate_reads(photos, tmp_path):
    run = tmp_path / "run"
    args = ["train", "sr", "--dataset", "folder", "--data", str(photos), "--out", str(run), "--steps", "2"]
    assert main([*args, "--width", "4", "--blocks", "1", "--no-progress"]) == 0
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["dataset"] == "folder" and manifest["config"]["model"]["x4"]["width"] == 4
    out = tmp_path / "r.json"
    evaluate = ["evaluate", "sr", "--model", str(run), "--dataset", "folder", "--data", str(photos), "--out", str(out)]
    assert main([*evaluate, "--no-progress"]) == 0
    assert json.loads(out.read_text())["nets"]["model"] == str(run)
