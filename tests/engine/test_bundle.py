"""Bundles: written complete, loaded with checks, refused when broken, promoted atomically."""

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

from engine.artifacts.bundle import load_bundle
from engine.artifacts.promotion import promote_bundle
from engine.artifacts.registry import CHECKSUMS, ArtifactRegistry, BundleRefused


def test_bundle_round_trip_has_every_component_and_manifest(trained_artifacts):
    root, version = trained_artifacts
    bundle = load_bundle(root / version)
    assert bundle.version == version
    manifest = bundle.manifest
    for key in (
        "schema_version",
        "package_version",
        "seed",
        "data_fingerprint",
        "created_at",
        "config",
        "metrics",
    ):
        assert key in manifest
    assert manifest["seed"] == 1
    for component in ("catalogue", "embeddings", "classifier", "generator", "index"):
        m = json.loads((root / version / component / "manifest.json").read_text())
        assert m["data_fingerprint"] == manifest["data_fingerprint"]
    # what was saved is what loads: the generator renders the same image twice, the index holds the catalogue
    z, y = torch.zeros(1, bundle.generator.config.z_dim), torch.as_tensor(bundle.codes[:1].copy())
    assert torch.equal(bundle.generator(z, y), load_bundle(root / version).generator(z, y))
    assert bundle.retriever.index.ntotal == int(bundle.catalogue["has_image"].sum())
    assert not list(root.glob(".staging-*"))


def test_no_pickles_in_what_the_api_loads(trained_artifacts):
    root, version = trained_artifacts
    suffixes = {p.suffix for p in (root / version).rglob("*") if p.is_file()}
    assert suffixes <= {".json", ".npz", ".safetensors", ".faiss", ".parquet"}


def _copy(root, version, tmp_path):
    reg = ArtifactRegistry(tmp_path)
    shutil.copytree(root / version, tmp_path / version)
    return reg


def _serving_and_candidate(trained_artifacts, tmp_path, candidate: str) -> tuple[ArtifactRegistry, str]:
    """A registry in ``tmp_path`` serving a copy of the trained bundle, and another copy named ``candidate``
    for a test to spoil and try to promote; returns the registry and the serving version."""
    root, version = trained_artifacts
    reg = _copy(root, version, tmp_path)
    reg.set_current(version)
    shutil.copytree(root / version, tmp_path / candidate)
    return reg, version


def test_broken_bundle_is_refused_and_the_old_one_keeps_serving(trained_artifacts, tmp_path):
    broken = "20990101T000000Z-0badf0"
    reg, version = _serving_and_candidate(trained_artifacts, tmp_path, broken)
    (tmp_path / broken / "generator" / "generator_ema.safetensors").write_bytes(b"not weights")
    with pytest.raises(BundleRefused, match="failed to load"):
        promote_bundle(reg, broken)
    assert reg.current() == version


def test_the_manifest_records_a_checksum_of_every_other_file(trained_artifacts):
    root, version = trained_artifacts
    recorded = json.loads((root / version / "manifest.json").read_text())[CHECKSUMS]
    files = {p.relative_to(root / version).as_posix() for p in (root / version).rglob("*") if p.is_file()}
    assert set(recorded) == files - {"manifest.json"}
    weights = root / version / "generator" / "generator_ema.safetensors"
    assert recorded["generator/generator_ema.safetensors"] == hashlib.sha256(weights.read_bytes()).hexdigest()


def _garble(path, at: float = 0.5) -> None:
    """Overwrite 64 bytes in the middle of a file: its size and format stay, its content does not."""
    data = bytearray(path.read_bytes())
    start = int(len(data) * at)
    data[start : start + 64] = bytes(64)
    path.write_bytes(bytes(data))


def test_a_garbled_weights_file_is_refused_by_its_checksum(trained_artifacts, tmp_path):
    """Zeroed bytes inside the generator's weights still load (a valid safetensors file of finite floats): only
    the checksum tells. Without the manifest's checksums the same bundle loads, and would serve other images."""
    root, version = trained_artifacts
    _copy(root, version, tmp_path)
    _garble(tmp_path / version / "generator" / "generator_ema.safetensors")
    with pytest.raises(BundleRefused, match=r"differ from the checksums .*generator/generator_ema\.safetensors"):
        load_bundle(tmp_path / version)
    manifest = json.loads((tmp_path / version / "manifest.json").read_text())
    del manifest[CHECKSUMS]  # as a bundle written before checksums existed
    (tmp_path / version / "manifest.json").write_text(json.dumps(manifest))
    unchecked = load_bundle(tmp_path / version)
    original = load_bundle(root / version)
    z, y = torch.zeros(1, original.generator.config.z_dim), torch.as_tensor(original.codes[:1].copy())
    assert not torch.equal(unchecked.generator(z, y), original.generator(z, y))


@pytest.mark.parametrize(
    ("spoil", "fragment"),
    [
        (
            lambda b: (b / "embeddings" / "factors.npz").write_bytes(
                (b / "embeddings" / "factors.npz").read_bytes()[:99]
            ),
            "differ from the checksums",
        ),
        (lambda b: (b / "index" / "manifest.json").write_text("{not json"), "index: manifest.json is not valid JSON"),
        (lambda b: (b / "manifest.json").write_text("{not json"), "bundle: manifest.json is not valid JSON"),
        (lambda b: (b / "ranker" / "ranker.json").unlink(), "files missing: ranker/ranker.json"),
        (lambda b: (b / "generator" / "notes.txt").write_text("hi"), "does not list .*generator/notes.txt"),
    ],
    ids=["truncated", "component-manifest", "bundle-manifest", "missing", "added"],
)
def test_a_spoiled_bundle_file_is_refused_saying_which(trained_artifacts, tmp_path, spoil, fragment):
    root, version = trained_artifacts
    _copy(root, version, tmp_path)
    spoil(tmp_path / version)
    with pytest.raises(BundleRefused, match=fragment):
        load_bundle(tmp_path / version)


def test_bundle_with_mismatched_components_is_refused(trained_artifacts, tmp_path):
    root, version = trained_artifacts
    _copy(root, version, tmp_path)
    with np.load(tmp_path / version / "index" / "item_ids.npz") as f:
        ids = f["item_ids"]
    np.savez(tmp_path / version / "index" / "item_ids.npz", item_ids=ids[::-1].copy())
    with pytest.raises(BundleRefused, match="FAISS index"):
        load_bundle(tmp_path / version)


def test_bundle_of_another_schema_is_refused(trained_artifacts, tmp_path):
    root, version = trained_artifacts
    _copy(root, version, tmp_path)
    path = tmp_path / version / "embeddings" / "manifest.json"
    m = json.loads(path.read_text())
    m["schema_version"] = 99
    path.write_text(json.dumps(m))
    with pytest.raises(BundleRefused, match="schema_version 99"):
        load_bundle(tmp_path / version)


def test_promotion_refuses_a_worse_key_metric_unless_forced(trained_artifacts, tmp_path):
    worse = "20990101T000000Z-00ba5e"
    reg, version = _serving_and_candidate(trained_artifacts, tmp_path, worse)
    path = tmp_path / worse / "manifest.json"
    m = json.loads(path.read_text())
    algo = m["config"]["embeddings"]["algorithm"]
    k = m["metrics"]["validation"]["k"]
    m["metrics"]["validation"]["results"][algo]["warm"][f"ndcg@{k}"] *= 0.5
    path.write_text(json.dumps(m))
    with pytest.raises(BundleRefused, match="tolerance"):
        promote_bundle(reg, worse)
    assert reg.current() == version
    promote_bundle(reg, worse, force=True)
    assert reg.current() == worse


def test_out_of_stock_items_stay_out_of_stock_in_the_bundle(demo_store, trained_artifacts, tmp_path):
    """A catalogue's in_stock column travels reader -> validation -> training -> bundle (serving filters on it)."""
    import pandas as pd

    from engine.training.config import load_train_config
    from engine.training.pipeline import train_bundle

    store = tmp_path / "store"
    shutil.copytree(demo_store, store)
    catalogue = pd.read_csv(store / "catalogue.csv", dtype=str, keep_default_na=False)
    sold_out = set(catalogue["item_id"].iloc[::4])
    catalogue["in_stock"] = ["false" if i in sold_out else "true" for i in catalogue["item_id"]]
    catalogue.to_csv(store / "catalogue.csv", index=False)
    version = train_bundle(
        store, tmp_path / "artifacts", load_train_config("tiny", overrides={"seed": 1}), show_progress=False
    )
    bundle = load_bundle(tmp_path / "artifacts" / version)
    assert bundle.catalogue["in_stock"].dtype == bool
    expected = ~bundle.catalogue["item_id"].isin(sold_out)
    assert (bundle.catalogue["in_stock"] == expected).all()
    assert not bundle.catalogue["in_stock"].all() and bundle.catalogue["in_stock"].any()
    # the demo store itself has no stock column, and so neither has its bundle
    root, served = trained_artifacts
    assert "in_stock" not in load_bundle(root / served).catalogue.columns
