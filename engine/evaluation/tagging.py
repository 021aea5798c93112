"""How well automatic tagging names a photo's attributes: accuracy per attribute on held-out catalogue images,
beside the majority baseline (always answer the training images' most frequent value) and chance.

Two sources of a classifier:

- a bundle (:func:`evaluate_bundle_tagging`): the classifier serving loads, through serving's own
  :class:`~engine.serving.tagging.Tagger`, on the catalogue photos its training held out
  (:func:`~engine.training.classifier.holdout_split` with the seed and share its manifest records). Each photo is
  read from its file's bytes by :func:`~engine.serving.tagging.decode_image`, as ``POST /v1/tag`` reads an upload,
  so what is measured is what is served; the accuracies equal those the training recorded in the manifest.
- a labelled dataset (:func:`evaluate_dataset_tagging`): a classifier trained by
  :func:`~engine.training.classifier.train_classifier` on the dataset's training split within a budget of epochs
  and seconds, measured on its test split (the dataset's own hash split by id): Myntra, H&M, a demo store,
  Fashion-MNIST.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from engine.artifacts.bundle import load_bundle
from engine.artifacts.registry import ArtifactRegistry
from engine.serving.tagging import Tagger, decode_image
from engine.training.classifier import ClassifierTrainConfig, holdout_split, train_classifier
from features.attributes import AttributeEncoder
from features.image_datasets import ImageDataset, read_fashion_mnist, read_myntra, store_images
from features.readers import read_store
from models.classifier import ClassifierConfig
from models.io import config_from_dict, read_json, write_json

logger = logging.getLogger(__name__)

DATASETS = ("myntra", "hm", "demo", "fashion_mnist")
TOP_K = 3


def majority(train_codes: np.ndarray, test_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(each attribute's most frequent training code, the share of test images that have it, the share that
    have every one of them): the accuracy of a tagger that always answers the majority values."""
    train_codes, test_codes = np.atleast_2d(train_codes), np.atleast_2d(test_codes)
    values = np.array([np.bincount(col).argmax() for col in train_codes.T], dtype=np.int64)
    return values, (test_codes == values).mean(axis=0), float((test_codes == values).all(axis=1).mean())


def accuracies(probabilities: Sequence[np.ndarray], codes: np.ndarray, *, top_k: int = TOP_K) -> dict[str, Any]:
    """Per attribute (by position), the share of images whose true code is the most probable one, and the share
    where it is among the ``top_k`` most probable; ``all``: the share with every attribute right."""
    codes = np.atleast_2d(codes)
    hits = np.stack([p.argmax(axis=1) == codes[:, a] for a, p in enumerate(probabilities)], axis=1)
    in_top = [
        float((np.argsort(-p, axis=1, kind="stable")[:, :top_k] == codes[:, a, None]).any(axis=1).mean())
        for a, p in enumerate(probabilities)
    ]
    return {"accuracy": hits.mean(axis=0).tolist(), "top_k_accuracy": in_top, "all": float(hits.all(axis=1).mean())}


def _report(
    tagger: Tagger,
    probabilities: list[np.ndarray],
    train_codes: np.ndarray,
    test_codes: np.ndarray,
    **about: Any,
) -> dict[str, Any]:
    measured = accuracies(probabilities, test_codes)
    values, base, base_all = majority(train_codes, test_codes)
    attributes = {}
    for a, name in enumerate(tagger.attributes):
        known = tagger.encoder.values_[name]
        attributes[name] = {
            "values": len(known),
            "accuracy": measured["accuracy"][a],
            f"top{TOP_K}_accuracy": measured["top_k_accuracy"][a],
            "majority_accuracy": float(base[a]),
            "majority_value": known[int(values[a])],
            "chance": 1.0 / len(known),
        }
    return {
        **about,
        "train_images": len(train_codes),
        "test_images": len(test_codes),
        "attributes": attributes,
        "all": {"accuracy": measured["all"], "majority_accuracy": base_all},
    }


def evaluate_bundle_tagging(
    artifacts: Path, *, version: str | None = None, out: Path | None = None, show_progress: bool = True
) -> dict[str, Any]:
    """The bundle's classifier, as serving loads and applies it, on the catalogue photos its training held out."""
    started = time.perf_counter()
    registry = ArtifactRegistry(artifacts)
    version = version or registry.current()
    if version is None:
        raise ValueError(f"{artifacts} has no serving bundle; pass --version or train one with `vitrine train`")
    bundle = load_bundle(registry.path(version))
    tagger = Tagger.from_bundle(bundle)
    manifest = read_json(bundle.path / "classifier" / "manifest.json")
    training = config_from_dict(
        ClassifierTrainConfig, manifest["config"]["training"], source=f"{bundle.path}/classifier/manifest.json"
    )
    with_image = bundle.catalogue["has_image"].to_numpy(dtype=bool)
    codes = bundle.codes[with_image]
    held, trained = holdout_split(len(codes), training.holdout, torch.Generator().manual_seed(int(manifest["seed"])))
    if len(held) == 0:
        raise ValueError(
            f"bundle {version}'s classifier was trained on every catalogue photo (holdout 0); measure a classifier "
            "trained on a split instead: vitrine evaluate tagging --dataset NAME --data DIR"
        )
    if bundle.image_root is None:
        raise ValueError(f"bundle {version} does not record where its catalogue photos are (image_root)")
    held_rows = np.sort(held.numpy())
    files = bundle.catalogue.loc[with_image, "image"].to_numpy(dtype=str)[held_rows]
    images = np.stack(
        [
            decode_image((bundle.image_root / f).read_bytes(), tagger.image_size)
            for f in tqdm(files, desc="held-out photos", unit="img", disable=not show_progress)
        ]
    )
    probabilities = tagger.probabilities(images)
    metrics = manifest.get("metrics", {})
    recorded = {k.removeprefix("accuracy_"): v for k, v in metrics.items() if k.startswith("accuracy_")}
    report = _report(
        tagger,
        probabilities,
        codes[trained.numpy()],
        codes[held_rows],
        source="bundle",
        bundle_version=version,
        data=(bundle.manifest.get("data") or {}).get("name"),
        split=f"the {training.holdout:.0%} of catalogue photos its training held out (seed {manifest['seed']})",
        classifier={"config": (manifest.get("config") or {}).get("model"), "recorded_at_training": recorded},
        seconds=round(time.perf_counter() - started, 1),
    )
    if out is not None:
        write_json(out, report)
    return report


def load_tagging_dataset(
    name: str, path: Path, *, max_images: int | None = None, show_progress: bool = True
) -> ImageDataset:
    """A labelled photo collection with every attribute the catalogue has: Myntra's articleType and baseColour;
    H&M's product type, colour group and graphical appearance (values with at least 100 photos); a demo store's
    class, colour and pattern (at least 5, as bundles keep); Fashion-MNIST's class (32×32 grey)."""
    path = Path(path)
    if name == "myntra":
        return read_myntra(path, size=64, max_images=max_images, show_progress=show_progress)
    if name == "fashion_mnist":
        ds = read_fashion_mnist(path, size=32)
    elif name in ("hm", "demo"):
        ds = store_images(read_store(path), size=64, min_count=100 if name == "hm" else 5, show_progress=show_progress)
    else:
        raise ValueError(f"unknown dataset {name!r}; choose one of {list(DATASETS)}")
    if max_images is not None and len(ds.images) > max_images:
        keep = np.zeros(len(ds.images), dtype=bool)
        keep[np.random.default_rng(0).choice(len(ds.images), max_images, replace=False)] = True
        ds = ds.subset(keep)
    return ds


def evaluate_dataset_tagging(
    name: str,
    path: Path,
    *,
    epochs: int = 3,
    seconds: float | None = 300.0,
    max_images: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    out: Path | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """A classifier trained (as bundles train theirs) on the dataset's training split within ``epochs`` and
    ``seconds``, tagging its test split."""
    started = time.perf_counter()
    ds = load_tagging_dataset(name, path, max_images=max_images, show_progress=show_progress)
    encoder = AttributeEncoder(ds.attributes).fit(ds.labels[~ds.is_test])
    codes = encoder.transform(ds.labels)
    test = ds.is_test & (codes >= 0).all(axis=1)  # a test value no training photo has cannot be learnt
    train = ~ds.is_test
    if train.sum() < 2 or test.sum() < 1:
        raise ValueError(f"{name}: {int(train.sum())} training and {int(test.sum())} test photos; too few")
    config = ClassifierConfig(
        attribute_names=ds.attributes,
        cardinalities=encoder.cardinalities,
        image_size=ds.images.shape[1],
        channels=ds.images.shape[3],
    )
    tcfg = ClassifierTrainConfig(epochs=epochs, holdout=0.0, max_seconds=seconds, device=device)
    classifier, metrics = train_classifier(
        ds.images[train], codes[train], config, tcfg, seed=seed, show_progress=show_progress
    )
    tagger = Tagger(classifier.cpu().eval(), encoder)
    probabilities = tagger.probabilities(ds.images[test])
    report = _report(
        tagger,
        probabilities,
        codes[train],
        codes[test],
        source="dataset",
        dataset=name,
        data=str(path),
        rule=ds.rule,
        split="the dataset's test split (a salted hash of the item id)" if name != "fashion_mnist" else "official",
        test_photos_with_unseen_values=int((ds.is_test & ~(codes >= 0).all(axis=1)).sum()),
        classifier={"epochs": epochs, "seconds_budget": seconds, "seed": seed, **metrics},
        seconds=round(time.perf_counter() - started, 1),
    )
    if out is not None:
        write_json(out, report)
    return report


def render(report: dict[str, Any]) -> str:
    """The report as a table: accuracy per attribute beside the majority baseline and chance."""
    source = (
        f"bundle {report['bundle_version']} ({report.get('data')})"
        if report["source"] == "bundle"
        else f"{report['dataset']}: {report.get('rule', '')}"
    )
    lines = [
        f"Tagging accuracy, {source}",
        f"{report['test_images']} held-out photos ({report['split']}); {report['train_images']} training photos",
        "",
        f"{'attribute':<12} {'values':>6} {'accuracy':>9} {'top-' + str(TOP_K):>7} {'majority':>9} {'chance':>7}"
        "  majority value",
    ]
    for name, a in report["attributes"].items():
        lines.append(
            f"{name:<12} {a['values']:>6} {a['accuracy']:>9.3f} {a[f'top{TOP_K}_accuracy']:>7.3f} "
            f"{a['majority_accuracy']:>9.3f} {a['chance']:>7.3f}  {a['majority_value']}"
        )
    lines.append(
        f"{'all':<12} {'':>6} {report['all']['accuracy']:>9.3f} {'':>7} {report['all']['majority_accuracy']:>9.3f}"
    )
    recorded = (report.get("classifier") or {}).get("recorded_at_training")
    if recorded:
        lines.append("recorded at training: " + ", ".join(f"{k} {v:.3f}" for k, v in recorded.items()))
    return "\n".join(lines)
