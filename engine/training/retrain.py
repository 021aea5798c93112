"""Partial retrains: a new bundle that retrains one part of a parent bundle and shares the rest with it.

``retrain_embeddings`` refits the embeddings on new events (the generator, classifier and index are the
parent's); ``retrain_visual`` adds a visual encoder to a bundle trained without one; ``retrain_sr`` trains the
super-resolution and restoration nets again (longer, or for a bundle without them). None promotes the new
bundle: `vitrine promote` decides.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import scipy.sparse as sp

from engine.artifacts.registry import ArtifactRegistry, link_or_copy
from engine.training.components import (
    Manifests,
    Timer,
    data_record,
    embeddings_into,
    item_popularity,
    ranker_into,
    staged_bundle,
    visual_into,
)
from engine.training.config import TrainConfig, build_config
from engine.training.data import read_training_data
from engine.training.sr import SRTrainConfig, sr_into
from engine.training.sr_data import CatalogueImages
from features.attributes import AttributeEncoder
from features.images import load_images
from models.cascade import load_discriminator, load_generator
from models.classifier import AttributeClassifier
from models.io import read_json


def _parent(artifacts: Path, parent: str | None, *, purpose: str) -> tuple[ArtifactRegistry, str, Path, dict]:
    """The registry, the parent bundle's version (default: the serving one), its folder and its manifest."""
    registry = ArtifactRegistry(artifacts)
    parent = parent or registry.current()
    if parent is None:
        raise ValueError(f"no serving bundle under {artifacts} to {purpose}; run `vitrine train` first")
    parent_dir = registry.path(parent)
    return registry, parent, parent_dir, read_json(parent_dir / "manifest.json")


def _share(parent_dir: Path, staging: Path, components: tuple[str, ...]) -> None:
    """The parent's ``components``, unchanged, in the new bundle (as hard links where the file system allows)."""
    for component in components:
        shutil.copytree(parent_dir / component, staging / component, copy_function=link_or_copy)


def retrain_embeddings(
    data_path: Path,
    artifacts: Path,
    *,
    since: pd.Timestamp | None = None,
    parent: str | None = None,
    config: TrainConfig | None = None,
    show_progress: bool = True,
    events: Sequence[str] = (),
) -> tuple[str, dict]:
    """A new bundle with fresh embeddings and the parent bundle's generator, classifier and index.

    The parent (default: the serving bundle) gives the config unless one is passed. ``since`` keeps only
    the events from that time on. ``events`` are event store URLs whose shopper events (the API's own
    traffic) join the data's logs, as in :func:`engine.training.pipeline.train_bundle`. Returns the new
    version and a comparison of its validation metrics with the parent's. Nothing is promoted: `vitrine
    promote` decides.
    """
    registry, parent, parent_dir, parent_manifest = _parent(artifacts, parent, purpose="retrain from")
    config = config or build_config(TrainConfig, parent_manifest["config"], source=f"bundle {parent}")
    timer = Timer()
    read_at = time.time()  # shoppers erased from now on are masked in this bundle (engine.serving.privacy)
    with timer.step("read and validate data"):
        store, service_events = read_training_data(data_path, events, artifacts=artifacts)
        if since is not None:
            since = pd.Timestamp(since)
            since = since.tz_localize("UTC") if since.tzinfo is None else since
            kept = store.events[store.events["timestamp"] >= since]
            if kept.empty:
                raise ValueError(f"no events on or after {since.isoformat()}; choose an earlier --since")
            store = dataclasses.replace(store, events=kept.reset_index(drop=True))
    fingerprint = store.fingerprint()
    manifest = Manifests(config.seed, fingerprint, parents=[parent])
    with staged_bundle(registry, fingerprint) as (version, staging):
        shared = ("classifier", "generator", "index", "catalogue", "sr")
        _share(parent_dir, staging, tuple(c for c in shared if (parent_dir / c).is_dir()))
        validation, matrix, items = embeddings_into(
            staging / "embeddings", store, config, timer, manifest, show_progress
        )
        ranker = ranker_into(staging / "ranker", store, config, timer, manifest)
        catalogue = pd.read_parquet(parent_dir / "catalogue" / "items.parquet")
        catalogue["popularity"] = item_popularity(catalogue, matrix, items)
        (staging / "catalogue" / "items.parquet").unlink()  # a hard link to the parent's: replace, never write
        catalogue.to_parquet(staging / "catalogue" / "items.parquet", index=False)
        metrics = {**parent_manifest.get("metrics", {}), "validation": validation, "ranker": ranker}
        bundle_manifest = manifest.bundle(
            config,
            metrics,
            version=version,
            retrained=["embeddings", "ranker"],
            since=since.isoformat() if since else None,
            data=data_record(store, data_path, service_events, read_at=read_at),
            seconds=timer.seconds,
        )
        registry.commit(staging, version, bundle_manifest)
    return version, compare_validation(parent_manifest, bundle_manifest)


def compare_validation(old: dict, new: dict) -> dict:
    """Warm and all-user metrics of two bundles' embeddings, side by side."""
    out = {}
    for name, manifest in (("serving", old), ("new", new)):
        v = manifest.get("metrics", {}).get("validation", {})
        algo = manifest.get("config", {}).get("embeddings", {}).get("algorithm")
        out[name] = {
            "version": manifest.get("version"),
            "k": v.get("k"),
            "split": v.get("split"),
            "results": v.get("results", {}).get(algo),
            "popularity": v.get("results", {}).get("popularity"),
        }
    return out


def retrain_visual(artifacts: Path, *, parent: str | None = None, show_progress: bool = True) -> tuple[str, dict]:
    """A new bundle: the parent's components unchanged, plus a visual encoder trained on its embeddings.

    This gives a bundle trained before the visual encoder existed (or one whose embeddings were retrained,
    which drops it) a ``visual/`` component without retraining the GAN. Nothing is promoted.
    """
    registry, parent, parent_dir, parent_manifest = _parent(artifacts, parent, purpose="start from")
    config = build_config(TrainConfig, parent_manifest["config"], source=f"bundle {parent}")
    fingerprint = parent_manifest["data_fingerprint"]
    timer = Timer()
    # The visual component's manifest names its own parents (embeddings, classifier, generator).
    manifest = Manifests(config.seed, fingerprint, parents=[parent])
    with staged_bundle(registry, fingerprint) as (version, staging):
        kept = ("catalogue", "embeddings", "classifier", "generator", "index", "ranker", "sr")
        _share(parent_dir, staging, tuple(c for c in kept if (parent_dir / c).is_dir()))
        catalogue = pd.read_parquet(parent_dir / "catalogue" / "items.parquet")
        root = read_json(parent_dir / "catalogue" / "manifest.json").get("image_root")
        if not root:
            raise ValueError(f"bundle {parent} does not say where its catalogue images are")
        with_image = catalogue[catalogue["has_image"]]
        with timer.step("load catalogue images"):
            images, ok = load_images(
                [Path(root) / p for p in with_image["image"]], config.image_size, show_progress=show_progress
            )
        if not ok.all():
            raise ValueError(f"{int((~ok).sum())} catalogue images of bundle {parent} no longer load from {root}")
        encoder = AttributeEncoder.from_dict(read_json(parent_dir / "catalogue" / "attributes.json"))
        classifier = AttributeClassifier.load(parent_dir / "classifier")
        generator = load_generator(parent_dir / "generator")
        discriminator = load_discriminator(parent_dir / "generator")
        matrix = sp.csr_matrix(sp.load_npz(parent_dir / "embeddings" / "history.npz"))
        with timer.step("train visual encoder (DVBPR)"):
            vmetrics = visual_into(
                staging,
                images,
                with_image["item_id"].to_numpy(),
                encoder.transform(with_image),
                classifier,
                generator,
                discriminator,
                matrix,
                config,
                manifest,
                show_progress=show_progress,
            )
        metrics = {**parent_manifest.get("metrics", {}), "visual": vmetrics}
        extra = {"version": version, "retrained": ["visual"], "seconds": timer.seconds}
        registry.commit(staging, version, {**parent_manifest, **manifest.bundle(config, metrics, **extra)})
    return version, vmetrics


def retrain_sr(
    artifacts: Path,
    *,
    parent: str | None = None,
    config: SRTrainConfig | None = None,
    show_progress: bool = True,
) -> tuple[str, dict]:
    """A new bundle: the parent's components unchanged, with its ``sr/`` component trained again on its catalogue
    (``config`` default: the parent's). Returns the version and the new component's held-out figures. Nothing is
    promoted."""
    registry, parent, parent_dir, parent_manifest = _parent(artifacts, parent, purpose="start from")
    bundle_config = build_config(TrainConfig, parent_manifest["config"], source=f"bundle {parent}")
    config = config or bundle_config.sr
    bundle_config = dataclasses.replace(bundle_config, sr=config)
    root = read_json(parent_dir / "catalogue" / "manifest.json").get("image_root")
    catalogue = CatalogueImages(
        name=str((parent_manifest.get("data") or {}).get("name", "")),
        items=pd.read_parquet(parent_dir / "catalogue" / "items.parquet"),
        image_root=Path(root) if root else None,
    )
    timer = Timer()
    manifest = Manifests(bundle_config.seed, parent_manifest["data_fingerprint"], parents=[parent])
    with staged_bundle(registry, parent_manifest["data_fingerprint"]) as (version, staging):
        kept = ("catalogue", "embeddings", "classifier", "generator", "index", "ranker", "visual")
        _share(parent_dir, staging, tuple(c for c in kept if (parent_dir / c).is_dir()))
        with timer.step("train super-resolution and restoration"):
            metrics = sr_into(
                staging / "sr", catalogue, config, manifest, seed=bundle_config.seed, show_progress=show_progress
            )
        extra = {"version": version, "retrained": ["sr"], "seconds": timer.seconds}
        bundle_metrics = {**parent_manifest.get("metrics", {}), "sr": metrics}
        bundle_manifest = manifest.bundle(bundle_config, bundle_metrics, **extra)
        registry.commit(staging, version, {**parent_manifest, **bundle_manifest})
    return version, metrics
