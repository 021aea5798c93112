"""The training pipeline: shop data → a complete, immutable model bundle.

Steps, each timed and logged: read and validate the data; encode attributes; load catalogue images;
weight events into a user × item matrix; fit embeddings on a time split to measure them, then on all
events to serve; train the attribute classifier; train the conditional GAN; index the catalogue's image
features in FAISS; write the bundle with manifests.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from engine.artifacts.registry import ArtifactRegistry, component_manifest
from engine.recommend.baselines import FactorRecommender, PopularityRecommender, build_interactions
from engine.recommend.factors import fit_embeddings
from engine.recommend.ranking import build_task, evaluate
from engine.training.classifier import train_classifier
from engine.training.config import TrainConfig, build_config
from engine.training.gan import train_gan
from features.attributes import AttributeEncoder
from features.images import load_images
from features.matrix import interaction_matrix
from features.readers import read_store
from features.schema import StoreData
from features.split import time_split
from features.vocab import IdVocabulary
from features.weighting import EventWeighter
from models.classifier import AttributeClassifier, ClassifierConfig
from models.gan import Discriminator, GANConfig, Generator
from models.io import config_to_dict, read_json, write_json
from models.pixels import to_tensor_images
from models.retriever import FaissRetriever

logger = logging.getLogger(__name__)


class Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        logger.info("▶ %s", name)
        yield
        self.seconds[name] = round(time.perf_counter() - started, 2)
        logger.info("✔ %s (%.1fs)", name, self.seconds[name])


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


def _matrix(events: pd.DataFrame, config: TrainConfig) -> tuple[object, IdVocabulary, IdVocabulary, np.ndarray]:
    weighter = EventWeighter(config.weighting).fit(events)
    users = IdVocabulary().fit(events["user_id"])
    items = IdVocabulary().fit(events["item_id"])
    weights = weighter.transform(events)
    return interaction_matrix(events, weights, users, items), users, items, weights


def validate_embeddings(store: StoreData, config: TrainConfig, *, show_progress: bool) -> dict:
    """Fit on all but the last ``test_days`` and measure against popularity on the held-out days."""
    split = time_split(store.events, test_days=config.test_days)
    data = build_interactions(split.train, config.weighting)
    task = build_task(split.test, data.users.index_, data.items.index_)
    k = config.eval_k
    recommenders = {
        "popularity": PopularityRecommender(),
        config.embeddings.algorithm: FactorRecommender(config.embeddings, PopularityRecommender(), seed=config.seed),
    }
    results = {name: evaluate(r.fit(data).recommend, task, k) for name, r in recommenders.items()}
    return {"split": split.describe(), "k": k, "results": results}


def train_bundle(
    data_path: Path,
    artifacts: Path,
    config: TrainConfig,
    *,
    show_progress: bool = True,
    promote: bool = False,
) -> str:
    """Train every component on the data at ``data_path`` and write a new bundle; return its version."""
    torch.manual_seed(config.seed)  # an entry point: every step below also takes the seed explicitly
    timer = Timer()
    with timer.step("read and validate data"):
        store = read_store(data_path)
    fingerprint = store.fingerprint()
    registry = ArtifactRegistry(artifacts)
    version = registry.new_version(fingerprint)
    staging = registry.staging(version)
    try:
        metrics = _train_into(staging, store, config, timer, fingerprint, show_progress)
        manifest = component_manifest(
            component="bundle",
            seed=config.seed,
            data_fingerprint=fingerprint,
            config=config.to_dict(),
            metrics=metrics,
            extra={
                "version": version,
                "data": {
                    "name": store.name,
                    "path": str(Path(data_path).resolve()),
                    "reports": {k: r.to_dict() for k, r in store.reports.items()},
                },
                "seconds": timer.seconds,
            },
        )
        registry.commit(staging, version, manifest)
    except BaseException:
        registry.discard(staging)
        raise
    if promote:
        from engine.artifacts.promotion import promote_bundle

        promote_bundle(registry, version)
    return version


def _embeddings_into(
    emb_dir: Path, store: StoreData, config: TrainConfig, timer: Timer, manifest, show_progress: bool
) -> tuple[dict, sp.csr_matrix, IdVocabulary]:
    """Validate on a time split, then train the serving embeddings on every event and save them."""
    with timer.step("validate embeddings on a time split"):
        validation = validate_embeddings(store, config, show_progress=show_progress)
    algo, k = config.embeddings.algorithm, config.eval_k
    warm = validation["results"][algo]["warm"]
    logger.info(
        "validation (last %d days, warm users): %s recall@%d=%.4f ndcg@%d=%.4f vs popularity recall@%d=%.4f",
        config.test_days,
        algo.upper(),
        k,
        warm[f"recall@{k}"],
        k,
        warm[f"ndcg@{k}"],
        k,
        validation["results"]["popularity"]["warm"][f"recall@{k}"],
    )
    with timer.step("train serving embeddings on all events"):
        matrix, users, items, _ = _matrix(store.events, config)
        embeddings = fit_embeddings(
            matrix, users.ids_, items.ids_, config.embeddings, seed=config.seed, show_progress=show_progress
        )
        embeddings.save(emb_dir)
        # each user's weighted history, so a session can be folded in on top of it at serving time
        sp.save_npz(emb_dir / "history.npz", matrix.tocsr(), compressed=True)
        write_json(emb_dir / "weighting.json", config_to_dict(config.weighting))
        write_json(
            emb_dir / "manifest.json",
            manifest(
                "embeddings",
                config_to_dict(config.embeddings),
                {"validation": validation},
                users=len(users),
                items=len(items),
            ),
        )
    return validation, matrix, items


def _item_popularity(catalogue: pd.DataFrame, matrix: sp.csr_matrix, items: IdVocabulary) -> np.ndarray:
    popularity = np.asarray(matrix.sum(axis=0)).ravel()
    rows = items.transform(catalogue["item_id"].to_numpy())
    return np.where(rows >= 0, popularity[np.maximum(rows, 0)], 0.0).astype(float)


def _train_into(
    out: Path, store: StoreData, config: TrainConfig, timer: Timer, fingerprint: str, show_progress: bool
) -> dict:
    seed = config.seed

    def manifest(component: str, cfg: object = None, metrics: dict | None = None, **extra: object) -> dict:
        return component_manifest(
            component=component,
            seed=seed,
            data_fingerprint=fingerprint,
            config=cfg,
            metrics=metrics,
            extra=extra or None,
        )

    with timer.step("encode attributes and load catalogue images"):
        vis = visual_catalogue(store, config, show_progress=show_progress)
    logger.info(
        "catalogue: %d items (%d with images); attributes %s",
        len(vis.items),
        len(vis.images),
        {a: len(v) for a, v in vis.encoder.values_.items()},
    )

    validation, matrix, items = _embeddings_into(out / "embeddings", store, config, timer, manifest, show_progress)
    vis.items["popularity"] = _item_popularity(vis.items, matrix, items)
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
        gcfg = GANConfig(
            attribute_names=names,
            cardinalities=card,
            image_size=config.image_size,
            **config_to_dict(config.gan),
        )
        result = train_gan(
            vis.images,
            image_codes,
            gcfg,
            config.gan_training,
            seed=seed,
            checkpoint_dir=out.parent / f".checkpoints-{out.name}" if config.gan_training.checkpoint_every else None,
            show_progress=show_progress,
        )
        gan_dir = out / "generator"
        result.generator_ema.save(gan_dir)
        result.discriminator.save(gan_dir)
        write_json(
            gan_dir / "manifest.json",
            manifest(
                "generator",
                {"model": config_to_dict(gcfg), "training": config_to_dict(config.gan_training)},
                {
                    "steps": result.steps,
                    "seconds": round(result.seconds, 1),
                    "stopped_early": result.stopped_early,
                },
                history=result.history,
            ),
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
                index_type=config.retriever.resolved_type(len(vectors)),
                parents=["classifier"],
            ),
        )

    metrics = {"validation": validation, "classifier": cmetrics, "generator": {"steps": result.steps}}
    if config.visual.enabled:
        with timer.step("train visual encoder (DVBPR)"):
            metrics["visual"] = visual_into(
                out,
                vis.images,
                vis.items.loc[vis.items["has_image"], "item_id"].to_numpy(),
                image_codes,
                classifier,
                result.generator_ema,
                result.discriminator,
                matrix,
                config,
                manifest,
                show_progress=show_progress,
            )
    return metrics


def visual_into(
    out: Path,
    images: np.ndarray,  # (n, S, S, C) uint8 catalogue images
    item_ids: np.ndarray,  # (n,) their item ids
    codes: np.ndarray,  # (n, n_attributes)
    classifier: AttributeClassifier,
    generator: torch.nn.Module,
    discriminator: torch.nn.Module,
    matrix: sp.csr_matrix,  # the serving embeddings' users × items matrix
    config: TrainConfig,
    manifest,
    *,
    show_progress: bool,
) -> dict:
    """Validate the visual encoder on a cold-item split (AUC, Recall@K), then fit the serving one into out/visual."""
    from engine.training.visual import train_visual, validate_visual, visual_data
    from models.embeddings import EmbeddingModel

    embeddings = EmbeddingModel.load(out / "embeddings")
    data = visual_data(classifier, images, item_ids, codes, embeddings.item_indices)
    seed = config.seed
    metrics = validate_visual(data, matrix, config.embeddings, config.visual, seed=seed, show_progress=show_progress)
    logger.info(
        "visual encoder: AUC %.4f (embeddings %.4f, popularity %.4f); cold-item recall@%d %.4f "
        "(condition mean factor %.4f, condition popularity %.4f, random %.4f)",
        metrics["auc"]["visual_encoder"],
        metrics["auc"]["embeddings"],
        metrics["auc"]["popularity"],
        metrics["k"],
        metrics["cold_recall"]["visual_encoder"],
        metrics["cold_recall"]["condition_mean_factor"],
        metrics["cold_recall"]["condition_popularity"],
        metrics["cold_recall"]["random"],
    )
    component = train_visual(
        data,
        matrix,
        embeddings,
        classifier,
        generator,
        discriminator,
        config.visual,
        seed=seed,
        show_progress=show_progress,
    )
    component.save(out / "visual")
    write_json(
        out / "visual" / "manifest.json",
        manifest(
            "visual",
            {"model": config_to_dict(component.encoder.config), "training": config_to_dict(config.visual)},
            {"validation": metrics, "calibration": config_to_dict(component.calibration)},
            parents=["embeddings", "classifier", "generator"],
        ),
    )
    return metrics


@torch.no_grad()
def image_features(classifier: AttributeClassifier, images: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
    """(N, S, S, C) uint8 images → (N, feature_dim) unit-length features."""
    data = to_tensor_images(images)
    classifier.eval()
    out = [
        classifier.features(data[s : s + batch_size].float().div(127.5).sub(1.0)).numpy()
        for s in range(0, len(data), batch_size)
    ]
    return np.concatenate(out).astype(np.float32)


def retrain_embeddings(
    data_path: Path,
    artifacts: Path,
    *,
    since: pd.Timestamp | None = None,
    parent: str | None = None,
    config: TrainConfig | None = None,
    show_progress: bool = True,
) -> tuple[str, dict]:
    """A new bundle with fresh embeddings and the parent bundle's generator, classifier and index.

    The parent (default: the serving bundle) gives the config unless one is passed. ``since`` keeps only
    the events from that time on. Returns the new version and a comparison of its validation metrics
    with the parent's. Nothing is promoted: `vitrine promote` decides.
    """
    registry = ArtifactRegistry(artifacts)
    parent = parent or registry.current()
    if parent is None:
        raise ValueError(f"no serving bundle under {artifacts} to retrain from; run `vitrine train` first")
    parent_dir = registry.path(parent)
    parent_manifest = read_json(parent_dir / "manifest.json")
    config = config or build_config(TrainConfig, parent_manifest["config"], source=f"bundle {parent}")
    timer = Timer()
    with timer.step("read and validate data"):
        store = read_store(data_path)
        if since is not None:
            since = pd.Timestamp(since)
            since = since.tz_localize("UTC") if since.tzinfo is None else since
            kept = store.events[store.events["timestamp"] >= since]
            if kept.empty:
                raise ValueError(f"no events on or after {since.isoformat()}; choose an earlier --since")
            store = dataclasses.replace(store, events=kept.reset_index(drop=True))
    fingerprint = store.fingerprint()
    version = registry.new_version(fingerprint)
    staging = registry.staging(version)

    def manifest(component: str, cfg: object = None, metrics: dict | None = None, **extra: object) -> dict:
        return component_manifest(
            component=component,
            seed=config.seed,
            data_fingerprint=fingerprint,
            config=cfg,
            metrics=metrics,
            parents=[parent],
            extra=extra or None,
        )

    try:
        for component in ("classifier", "generator", "index", "catalogue"):
            shutil.copytree(parent_dir / component, staging / component, copy_function=_link_or_copy)
        validation, matrix, items = _embeddings_into(
            staging / "embeddings", store, config, timer, manifest, show_progress
        )
        catalogue = pd.read_parquet(parent_dir / "catalogue" / "items.parquet")
        catalogue["popularity"] = _item_popularity(catalogue, matrix, items)
        (staging / "catalogue" / "items.parquet").unlink()  # a hard link to the parent's: replace, never write
        catalogue.to_parquet(staging / "catalogue" / "items.parquet", index=False)
        metrics = {**parent_manifest.get("metrics", {}), "validation": validation}
        bundle_manifest = component_manifest(
            component="bundle",
            seed=config.seed,
            data_fingerprint=fingerprint,
            config=config.to_dict(),
            metrics=metrics,
            parents=[parent],
            extra={
                "version": version,
                "retrained": ["embeddings"],
                "since": since.isoformat() if since else None,
                "data": {
                    "name": store.name,
                    "path": str(Path(data_path).resolve()),
                    "reports": {k: r.to_dict() for k, r in store.reports.items()},
                },
                "seconds": timer.seconds,
            },
        )
        registry.commit(staging, version, bundle_manifest)
    except BaseException:
        registry.discard(staging)
        raise
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


def _link_or_copy(src: str, dst: str) -> str:
    """Bundles are immutable, so unchanged components can share files with their parent."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def retrain_visual(artifacts: Path, *, parent: str | None = None, show_progress: bool = True) -> tuple[str, dict]:
    """A new bundle: the parent's components unchanged, plus a visual encoder trained on its embeddings.

    This gives a bundle trained before the visual encoder existed (or one whose embeddings were retrained,
    which drops it) a ``visual/`` component without retraining the GAN. Nothing is promoted.
    """
    from features.images import load_images

    registry = ArtifactRegistry(artifacts)
    parent = parent or registry.current()
    if parent is None:
        raise ValueError(f"no serving bundle under {artifacts} to start from; run `vitrine train` first")
    parent_dir = registry.path(parent)
    parent_manifest = read_json(parent_dir / "manifest.json")
    config = build_config(TrainConfig, parent_manifest["config"], source=f"bundle {parent}")
    fingerprint = parent_manifest["data_fingerprint"]
    timer = Timer()
    version = registry.new_version(fingerprint)
    staging = registry.staging(version)

    def manifest(component: str, cfg: object = None, metrics: dict | None = None, **extra: object) -> dict:
        return component_manifest(
            component=component,
            seed=config.seed,
            data_fingerprint=fingerprint,
            config=cfg,
            metrics=metrics,
            extra=extra or None,
        )

    try:
        for component in ("catalogue", "embeddings", "classifier", "generator", "index"):
            shutil.copytree(parent_dir / component, staging / component, copy_function=_link_or_copy)
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
        generator = Generator.load(parent_dir / "generator")
        discriminator = Discriminator.load(parent_dir / "generator")
        matrix = sp.load_npz(parent_dir / "embeddings" / "history.npz").tocsr()
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
        bundle_manifest = {
            **parent_manifest,
            **component_manifest(
                component="bundle",
                seed=config.seed,
                data_fingerprint=fingerprint,
                config=config.to_dict(),
                metrics=metrics,
                parents=[parent],
                extra={"version": version, "retrained": ["visual"], "seconds": timer.seconds},
            ),
        }
        registry.commit(staging, version, bundle_manifest)
    except BaseException:
        registry.discard(staging)
        raise
    return version, vmetrics
