"""The steps that train one component of a bundle and write it into the bundle's folder, shared by the full
pipeline (``engine.training.pipeline``) and the partial retrains (``engine.training.retrain``): timing,
manifests, staging a new bundle version, the embeddings (validated on a time split, then fitted on every
event) and the visual encoder.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from engine.artifacts.registry import ArtifactRegistry, component_manifest
from engine.recommend.baselines import FactorRecommender, PopularityRecommender, Recommender, build_interactions
from engine.recommend.factors import fit_embeddings
from engine.recommend.ranker_files import save_ranker
from engine.recommend.ranking import build_task, evaluate
from engine.recommend.reranker import fit_ranker
from engine.training.config import TrainConfig
from engine.training.visual import train_visual, validate_visual, visual_data
from features.matrix import interaction_matrix
from features.schema import StoreData
from features.split import time_split
from features.vocab import IdVocabulary
from features.weighting import EventWeighter
from models.classifier import AttributeClassifier
from models.embeddings import EmbeddingModel
from models.io import config_to_dict, write_json
from models.pixels import to_tensor_images

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


@dataclass(frozen=True)
class Manifests:
    """The manifests of one bundle: every one records the bundle's seed, data fingerprint and parent bundles."""

    seed: int
    data_fingerprint: str
    parents: list[str] | None = None

    def __call__(self, component: str, cfg: object = None, metrics: dict | None = None, **extra: object) -> dict:
        """A component's manifest; ``extra`` keys are added (``parents`` there names the component's own)."""
        return component_manifest(
            component=component,
            seed=self.seed,
            data_fingerprint=self.data_fingerprint,
            config=cfg,
            metrics=metrics,
            parents=self.parents,
            extra=extra or None,
        )

    def bundle(self, config: TrainConfig, metrics: dict, **extra: object) -> dict:
        """The bundle's own manifest, with the resolved training config."""
        return component_manifest(
            component="bundle",
            seed=self.seed,
            data_fingerprint=self.data_fingerprint,
            config=config.to_dict(),
            metrics=metrics,
            parents=self.parents,
            extra=extra,
        )


def data_record(
    store: StoreData, data_path: Path, service_events: dict[str, Any] | None = None, *, read_at: float | None = None
) -> dict[str, Any]:
    """Which data a bundle was trained on, with the readers' reports on it, and the service events it added
    (their sources without credentials, and counts; see :func:`engine.training.data.read_training_data`).
    ``read_at`` (epoch seconds) is when it was read: serving masks shoppers erased from then on."""
    record = {
        "name": store.name,
        "path": str(Path(data_path).resolve()),
        "read_at": read_at,
        "reports": {k: r.to_dict() for k, r in store.reports.items()},
    }
    if service_events is not None:
        record["service_events"] = service_events
    return record


@contextmanager
def staged_bundle(registry: ArtifactRegistry, fingerprint: str) -> Iterator[tuple[str, Path]]:
    """A new version and its staging folder, for the body to fill and commit; removed if the body fails."""
    version = registry.new_version(fingerprint)
    staging = registry.staging(version)
    try:
        yield version, staging
    except BaseException:
        registry.discard(staging)
        raise


def _matrix(events: pd.DataFrame, config: TrainConfig) -> tuple[sp.csr_matrix, IdVocabulary, IdVocabulary, np.ndarray]:
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
    recommenders: dict[str, Recommender] = {
        "popularity": PopularityRecommender(),
        config.embeddings.algorithm: FactorRecommender(config.embeddings, PopularityRecommender(), seed=config.seed),
    }
    results = {name: evaluate(r.fit(data).recommend, task, k) for name, r in recommenders.items()}
    return {"split": split.describe(), "k": k, "results": results}


def embeddings_into(
    emb_dir: Path, store: StoreData, config: TrainConfig, timer: Timer, manifest: Manifests, show_progress: bool
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


def ranker_into(rank_dir: Path, store: StoreData, config: TrainConfig, timer: Timer, manifest: Manifests) -> dict:
    """Fit the ranker (candidate sources + LightGBM) on every event and save it: what serving ranks with."""
    with timer.step("train the ranker on all events"):
        ranker = fit_ranker(store.events, store.catalogue, config.weighting, config.ranker, seed=config.seed)
        save_ranker(ranker, rank_dir)
        write_json(rank_dir / "manifest.json", manifest("ranker", config_to_dict(config.ranker), ranker.training_))
    logger.info("ranker: %s", ranker.training_)
    return ranker.training_


def item_popularity(catalogue: pd.DataFrame, matrix: sp.csr_matrix, items: IdVocabulary) -> np.ndarray:
    """(n_catalogue_items,) each catalogue item's summed event weight; 0 for items without events."""
    popularity = np.asarray(matrix.sum(axis=0)).ravel()
    rows = items.transform(catalogue["item_id"].to_numpy())
    return np.where(rows >= 0, popularity[np.maximum(rows, 0)], 0.0).astype(float)


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
    manifest: Manifests,
    *,
    show_progress: bool,
) -> dict:
    """Validate the visual encoder on a cold-item split (AUC, Recall@K), then fit the serving one into out/visual.

    Returns the validation figures, with ``privacy`` the serving fit's record (ε spent at δ, or "not private");
    the validation fit's own record stays in the component's manifest."""
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
    component, privacy = train_visual(
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
            privacy=privacy,
        ),
    )
    return {**metrics, "privacy": privacy}


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
