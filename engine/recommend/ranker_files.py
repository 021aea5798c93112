"""The re-ranker as files: its fitted candidate sources and LightGBM boosters in one folder, and back.

This is the ``ranker/`` component of a model bundle. Loading gives a :class:`RerankRecommender` that ranks
exactly as the one that was saved (a test pins it), so what serving loads is what the evaluation scored.

Layout (``schema_version`` 1):
    ranker.json         config, event weighting, seed, training record, feature names, which matrices exist
    <name>.npz          one scipy CSR matrix per fitted source (strength, similarity, …)
    arrays.npz          the per-item and per-shopper arrays (ids, popularity, prices, attribute codes)
    als/                the sources' ALS model (``EmbeddingModel``)
    model_<b>.txt       the bag's LightGBM boosters, LightGBM's own text format
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from engine.recommend.candidates import FEATURES, CandidateSources
from engine.recommend.reranker import Bag, RerankerConfig, RerankRecommender
from engine.recommend.rows import onehot
from features.weighting import WeightingConfig
from models.embeddings import EmbeddingConfig, EmbeddingModel
from models.io import config_from_dict, config_to_dict, read_json, write_json

SCHEMA_VERSION = 1
SPARSE = (
    *("strength", "purchases", "own_age", "own_session", "own_rebuy"),
    *("similarity", "cosine", "basket", "family"),
)
ARRAYS = ("user_ids", "item_ids", "popular", "discount_1d", "discount_min", "log_price", "class_rank")


def sources_state(src: CandidateSources) -> tuple[dict[str, sp.csr_matrix], dict[str, np.ndarray], EmbeddingModel]:
    """(sparse matrices, arrays, the ALS model): everything ``CandidateSources.pairs`` reads, by name. Absent
    optional parts (no product families, no channels) are left out."""
    sparse = {k: getattr(src, k) for k in SPARSE if getattr(src, k) is not None}
    arrays = {k: np.asarray(getattr(src, k)) for k in ARRAYS}
    arrays |= {f"pop.{k}": v for k, v in src.pop.items()}
    arrays |= {f"code.{k}": v for k, v in src.codes.items()}
    return sparse, arrays, src.als


def sources_from_state(
    config: RerankerConfig, sparse: dict[str, sp.csr_matrix], arrays: dict[str, np.ndarray], als: EmbeddingModel
) -> CandidateSources:
    """Sources rebuilt from :func:`sources_state`'s parts, without refitting; they give the same candidates."""
    src = CandidateSources.__new__(CandidateSources)
    src.config, src.als = config, als
    for k in SPARSE:
        setattr(src, k, sp.csr_matrix(sparse[k]) if k in sparse else None)
    for k in ARRAYS:
        setattr(src, k, arrays[k])
    src.pop = {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith("pop.")}
    src.codes = {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith("code.")}
    src.onehots = {col: onehot(codes, len(src.item_ids)) for col, codes in src.codes.items()}
    return src


def save_ranker(ranker: RerankRecommender, directory: Path) -> None:
    """Write a fitted ranker into ``directory`` (created if needed)."""
    if not hasattr(ranker, "sources_"):
        raise ValueError("the ranker is not fitted; call fit() before saving it")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sparse, arrays, als = sources_state(ranker.sources_)
    for name, matrix in sparse.items():
        sp.save_npz(directory / f"{name}.npz", sp.csr_matrix(matrix))
    np.savez(directory / "arrays.npz", allow_pickle=False, **arrays)
    als.save(directory / "als")
    models = ranker.model_.models if ranker.model_ is not None else []
    for b, booster in enumerate(models):
        (directory / f"model_{b}.txt").write_text(booster.model_to_string())
    write_json(
        directory / "ranker.json",
        {
            "schema_version": SCHEMA_VERSION,
            "config": config_to_dict(ranker.config),
            "weighting": config_to_dict(ranker.weighting),
            "seed": ranker.seed,
            "training": ranker.training_,
            "features": list(FEATURES),
            "sparse": sorted(sparse),
            "models": len(models),
        },
    )


def load_ranker(directory: Path) -> RerankRecommender:
    """The ranker saved in ``directory``; ValueError saying what is wrong with a folder it cannot read."""
    import lightgbm

    directory = Path(directory)
    meta_path = directory / "ranker.json"
    if not meta_path.is_file():
        raise ValueError(f"{directory} holds no ranker.json; train a bundle with a ranker (`vitrine train`)")
    meta = read_json(meta_path)
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"ranker schema_version {meta.get('schema_version')!r}; this code reads {SCHEMA_VERSION}")
    if meta.get("features") != list(FEATURES):
        raise ValueError("the ranker was trained on other features than this code computes; retrain it")
    raw = dict(meta["config"])
    embeddings = config_from_dict(EmbeddingConfig, raw.pop("embeddings"), source=f"{meta_path}: config.embeddings")
    config = config_from_dict(RerankerConfig, {**raw, "embeddings": embeddings}, source=f"{meta_path}: config")
    weighting = config_from_dict(WeightingConfig, meta["weighting"], source=f"{meta_path}: weighting")
    sparse = {name: sp.csr_matrix(sp.load_npz(directory / f"{name}.npz")) for name in meta["sparse"]}
    with np.load(directory / "arrays.npz", allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    als = EmbeddingModel.load(directory / "als")
    ranker = RerankRecommender(config, weighting=weighting, seed=int(meta["seed"]))
    ranker.weighting = weighting  # as saved: the caller's type weights with the sources' own half-life
    ranker.sources_ = sources_from_state(config, sparse, arrays, als)
    boosters = [
        lightgbm.Booster(model_str=(directory / f"model_{b}.txt").read_text()) for b in range(int(meta["models"]))
    ]
    ranker.model_ = Bag(boosters) if boosters else None
    ranker.training_ = meta["training"]
    n_users, n_items = len(arrays["user_ids"]), len(arrays["item_ids"])
    if ranker.sources_.strength.shape != (n_users, n_items) or als.user_factors.shape[0] != n_users:
        raise ValueError(f"the ranker's matrices do not match its {n_users} shoppers × {n_items} items")
    return ranker
