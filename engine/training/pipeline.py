"""The training pipeline: shop data → a complete, immutable model bundle.

Steps, each timed and logged: read and validate the data; encode attributes; load catalogue images;
weight events into a user × item matrix; fit embeddings on a time split to measure them, then on all
events to serve; train the attribute classifier; train the conditional GAN (a cascade's upscaler first;
continued from the serving bundle's GAN where it fits); index the catalogue's image features in FAISS; train
the visual encoder; train the super-resolution and restoration nets; write the bundle with manifests. The
steps shared with the partial retrains (``engine.training.retrain``) live in ``engine.training.components``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from engine.artifacts.registry import ArtifactRegistry
from engine.training.classifier import train_classifier
from engine.training.components import (
    Manifests,
    Timer,
    data_record,
    embeddings_into,
    image_features,
    item_popularity,
    ranker_into,
    staged_bundle,
    validate_embeddings,
    visual_into,
)
from engine.training.config import TrainConfig
from engine.training.data import read_training_data
from engine.training.generator import generator_into
from engine.training.retrain import retrain_embeddings, retrain_visual
from engine.training.sr import sr_into
from engine.training.sr_data import CatalogueImages
from engine.training.warm_start import ContinueFrom
from features.attributes import AttributeEncoder
from features.images import load_images
from features.schema import StoreData
from models.classifier import ClassifierConfig
from models.io import config_to_dict, write_json
from models.retriever import FaissRetriever

# The partial retrains and the embeddings' validation are reached from here too, as callers always have.
__all__ = ["retrain_embeddings", "retrain_visual", "train_bundle", "validate_embeddings", "visual_catalogue"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class VisualCatalogue:
    """Catalogue items with a known value for every attribute, their codes, and images where they have one."""

    items: pd.DataFrame  # item_id, attributes…, price, image, has_image
    codes: np.ndarray  # (n_items, n_attributes)
    images: np.ndarray  # (n_with_image, S, S, 3) uint8, in the order of items[has_image]
    encoder: AttributeEncoder


def visual_catalogue(store: StoreData, config: TrainConfig, *, show_progress: bool) -> VisualCatalogue:
    cat = store.catalogue
    with_image = cat[cat["image"] != ""]
    if with_image.empty or store.image_root is None:
        raise ValueError(f"{store.name}: no catalogue item has an image; the generator needs catalogue images")
    encoder = AttributeEncoder(store.attributes, min_count=config.min_attribute_count).fit(with_image)
    codes = encoder.transform(cat)
    known = (codes >= 0).all(axis=1)
    dropped = int((~known).sum())
    if dropped:
        logger.info(
            "%d catalogue items have an attribute value with fewer than %d images; left out of the generated catalogue",
            dropped,
            config.min_attribute_count,
        )
    items = cat[known].reset_index(drop=True)
    codes = codes[known]
    paths = [store.image_root / p if p else None for p in items["image"]]
    images, ok = load_images(paths, config.image_size, show_progress=show_progress, desc="catalogue images")
    items["has_image"] = ok
    return VisualCatalogue(items=items, codes=codes, images=images[ok], encoder=encoder)


def train_bundle(
    data_path: Path,
    artifacts: Path,
    config: TrainConfig,
    *,
    show_progress: bool = True,
    promote: bool = False,
    events: Sequence[str] = (),
    continue_from: ContinueFrom | None = None,
) -> str:
    """Train every component on the data at ``data_path`` and write a new bundle; return its version.

    The GAN continues from the serving bundle's where it fits, or from the bundle ``continue_from`` names
    (``engine.training.warm_start``).

    ``events`` are event store URLs whose stored shopper events (the API's own traffic) are added to the
    data's logs (see :func:`engine.training.data.read_training_data`); the manifest records where from.
    """
    continue_from = continue_from or ContinueFrom()
    torch.manual_seed(config.seed)  # an entry point: every step below also takes the seed explicitly
    timer = Timer()
    read_at = time.time()  # shoppers erased from now on are masked in this bundle (engine.serving.privacy)
    with timer.step("read and validate data"):
        store, service_events = read_training_data(data_path, events, artifacts=artifacts)
    fingerprint = store.fingerprint()
    registry = ArtifactRegistry(artifacts)
    manifest = Manifests(config.seed, fingerprint)
    with staged_bundle(registry, fingerprint) as (version, staging):
        metrics = _train_into(
            staging, store, config, timer, manifest, show_progress, registry=registry, continue_from=continue_from
        )
        extra = {
            "version": version,
            "data": data_record(store, data_path, service_events, read_at=read_at),
            "seconds": timer.seconds,
        }
        registry.commit(staging, version, manifest.bundle(config, metrics, **extra))
    if promote:
        from engine.artifacts.promotion import promote_bundle

        promote_bundle(registry, version)
    return version


def _train_into(
    out: Path,
    store: StoreData,
    config: TrainConfig,
    timer: Timer,
    manifest: Manifests,
    show_progress: bool,
    *,
    registry: ArtifactRegistry,
    continue_from: ContinueFrom,
) -> dict:
    seed = config.seed
    with timer.step("encode attributes and load catalogue images"):
        vis = visual_catalogue(store, config, show_progress=show_progress)
    logger.info(
        "catalogue: %d items (%d with images); attributes %s",
        len(vis.items),
        len(vis.images),
        {a: len(v) for a, v in vis.encoder.values_.items()},
    )

    validation, matrix, items = embeddings_into(out / "embeddings", store, config, timer, manifest, show_progress)
    ranker = ranker_into(out / "ranker", store, config, timer, manifest)
    vis.items["popularity"] = item_popularity(vis.items, matrix, items)
    cat_dir = out / "catalogue"
    cat_dir.mkdir()
    vis.items.to_parquet(cat_dir / "items.parquet", index=False)
    write_json(cat_dir / "attributes.json", vis.encoder.to_dict())
    write_json(
        cat_dir / "manifest.json",
        manifest(
            "catalogue",
            None,
            {"items": len(vis.items), "with_image": int(vis.items["has_image"].sum())},
            image_root=str(store.image_root.resolve()) if store.image_root else None,
            image_size=config.image_size,
        ),
    )

    image_codes = vis.codes[vis.items["has_image"].to_numpy()]
    names, card = vis.encoder.attributes, vis.encoder.cardinalities

    with timer.step("train attribute classifier"):
        ccfg = ClassifierConfig(
            attribute_names=names,
            cardinalities=card,
            image_size=config.image_size,
            width=config.classifier.width,
            feature_dim=config.classifier.feature_dim,
        )
        classifier, cmetrics = train_classifier(
            vis.images, image_codes, ccfg, config.classifier_training, seed=seed, show_progress=show_progress
        )
        classifier.save(out / "classifier")
        write_json(
            out / "classifier" / "manifest.json",
            manifest(
                "classifier",
                {"model": config_to_dict(ccfg), "training": config_to_dict(config.classifier_training)},
                cmetrics,
            ),
        )

    with timer.step("train conditional GAN"):
        trained = generator_into(
            out / "generator",
            vis.images,
            image_codes,
            vis.encoder,
            config,
            manifest,
            registry=registry,
            continue_from=continue_from,
            show_progress=show_progress,
        )

    with timer.step("index catalogue image features"):
        vectors = image_features(classifier, vis.images)
        retriever = FaissRetriever.build(
            vectors, vis.items.loc[vis.items["has_image"], "item_id"].to_numpy(), config.retriever
        )
        retriever.save(out / "index")
        write_json(
            out / "index" / "manifest.json",
            manifest(
                "index",
                config_to_dict(config.retriever),
                {"items": len(vectors)},
                index_type=retriever.index_type,
                parents=["classifier"],
            ),
        )

    generator = {**trained.record, "privacy": trained.result.privacy}
    metrics = {"validation": validation, "ranker": ranker, "classifier": cmetrics, "generator": generator}
    if config.visual.enabled:
        with timer.step("train visual encoder (DVBPR)"):
            metrics["visual"] = visual_into(
                out,
                vis.images,
                vis.items.loc[vis.items["has_image"], "item_id"].to_numpy(),
                image_codes,
                classifier,
                trained.generator,
                trained.discriminator,
                matrix,
                config,
                manifest,
                show_progress=show_progress,
            )
    if config.sr.enabled:
        with timer.step("train super-resolution and restoration"):
            metrics["sr"] = sr_into(
                out / "sr", CatalogueImages.of(store), config.sr, manifest, seed=seed, show_progress=show_progress
            )
    return metrics
