"""Top-k recommenders over a time split: the baselines Vitrine is measured against, and its own blend.

Every recommender is fitted on :class:`Interactions` (the training period) and answers
``recommend(user_rows, k) -> (B, k)`` item rows, with user row -1 for shoppers unseen in training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from engine.recommend.factors import fit_embeddings
from engine.recommend.ranking import top_k
from features.matrix import interaction_matrix
from features.vocab import IdVocabulary
from features.weighting import EventWeighter, WeightingConfig
from models.embeddings import EmbeddingConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Interactions:
    """The training period, shaped for recommenders."""

    events: pd.DataFrame  # the training events, with int columns user_row and item_row
    matrix: sp.csr_matrix  # (n_users, n_items) weighted strengths
    users: IdVocabulary
    items: IdVocabulary
    reference_time: pd.Timestamp  # the end of the training period

    @property
    def n_items(self) -> int:
        return len(self.items)


def build_interactions(events: pd.DataFrame, weighting: WeightingConfig) -> Interactions:
    users = IdVocabulary().fit(events["user_id"])
    items = IdVocabulary().fit(events["item_id"])
    weighter = EventWeighter(weighting).fit(events)
    weights = weighter.transform(events)
    matrix = interaction_matrix(events, weights, users, items)
    ev = events.assign(
        user_row=users.transform(events["user_id"]),
        item_row=items.transform(events["item_id"]),
        weight=weights,
    )
    return Interactions(events=ev, matrix=matrix, users=users, items=items, reference_time=weighter.reference_time_)


class Recommender(Protocol):
    name: str

    def fit(self, data: Interactions) -> Recommender: ...

    def recommend(self, user_rows: np.ndarray, k: int) -> np.ndarray: ...


def _pad(lists: list[np.ndarray], fallback: np.ndarray, k: int) -> np.ndarray:
    """Fill each list up to k with fallback items it does not hold yet."""
    out = np.empty((len(lists), k), dtype=np.int64)
    for r, items in enumerate(lists):
        items = items[:k]
        if len(items) < k:
            extra = fallback[~np.isin(fallback, items)][: k - len(items)]
            items = np.concatenate([items, extra])
        out[r, : len(items)] = items
        out[r, len(items) :] = -1
    return out


class PopularityRecommender:
    """Everyone gets the items with the most purchases; ``window_days`` counts only the last days."""

    def __init__(self, *, window_days: float | None = None, event_types: tuple[str, ...] = ("purchase",)) -> None:
        self.window_days = window_days
        self.event_types = event_types
        self.name = "popularity" if window_days is None else f"popularity (last {window_days:g} days)"

    def fit(self, data: Interactions) -> PopularityRecommender:
        ev = data.events[data.events["event_type"].astype(str).isin(self.event_types)]
        if ev.empty:  # logs without purchases: count every event
            ev = data.events
        if self.window_days is not None:
            ev = ev[ev["timestamp"] >= data.reference_time.floor("D") - pd.Timedelta(days=self.window_days - 1)]
        counts = np.bincount(ev["item_row"], minlength=data.n_items).astype(np.float64)
        # ties broken by all-time popularity, so short windows still give a full ranking
        total = np.asarray(data.matrix.sum(axis=0)).ravel()
        self.scores_ = counts + 1e-6 * total / max(total.max(), 1e-12)
        self.ranking_ = top_k(self.scores_[None, :], data.n_items)[0]
        return self

    def recommend(self, user_rows: np.ndarray, k: int) -> np.ndarray:
        return np.tile(self.ranking_[:k], (len(user_rows), 1))


class RepurchaseRecommender:
    """A shopper's own past items, most recent (then most often) first, padded with ``fallback``."""

    def __init__(self, fallback: Recommender) -> None:
        self.fallback = fallback
        self.name = f"repurchase + {fallback.name}"

    def fit(self, data: Interactions) -> RepurchaseRecommender:
        ev = data.events
        last = (
            ev.groupby(["user_row", "item_row"], observed=True)
            .agg(last=("timestamp", "max"), weight=("weight", "sum"))
            .reset_index()
        )
        last = last.sort_values(["user_row", "last", "weight"], ascending=[True, False, False])
        self.history_ = {u: g["item_row"].to_numpy() for u, g in last.groupby("user_row", sort=False)}
        self.fallback.fit(data)
        return self

    def recommend(self, user_rows: np.ndarray, k: int) -> np.ndarray:
        fill = self.fallback.recommend(np.array([-1]), k)[0]
        return _pad([self.history_.get(int(u), np.empty(0, np.int64)) for u in user_rows], fill, k)


class FactorRecommender:
    """implicit's ALS or BPR; users unseen in training get ``fallback``."""

    def __init__(self, config: EmbeddingConfig, fallback: Recommender, *, seed: int = 0) -> None:
        self.config = config
        self.fallback = fallback
        self.seed = seed
        self.name = f"{config.algorithm} ({config.factors} factors)"

    def fit(self, data: Interactions) -> FactorRecommender:
        self.model_ = fit_embeddings(
            data.matrix, data.users.ids_, data.items.ids_, self.config, seed=self.seed, show_progress=False
        )
        self.fallback.fit(data)
        return self

    def recommend(self, user_rows: np.ndarray, k: int) -> np.ndarray:
        out = self.fallback.recommend(user_rows, k).copy()
        warm = user_rows >= 0
        if warm.any():
            out[warm] = top_k(self.model_.user_factors[user_rows[warm]] @ self.model_.item_factors.T, k)
        return out


def item_knn_similarity(kind: str, matrix: sp.csr_matrix, neighbours: int):
    """implicit's item-item model (``kind`` "cosine" or "bm25", ``neighbours`` per item) fitted on ``matrix``.

    implicit's own weighting hands its item-item fit a COO matrix and then warns about it (a ParameterWarning
    per fit, implicit 0.7); our input is CSR, so that warning says nothing about our code and is silenced here.
    """
    import warnings

    from implicit.nearest_neighbours import BM25Recommender, CosineRecommender
    from implicit.utils import ParameterWarning

    model = BM25Recommender(K=neighbours) if kind == "bm25" else CosineRecommender(K=neighbours)
    with threadpool_limits(1, "blas"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Method expects CSR input", category=ParameterWarning)
        model.fit(sp.csr_matrix(matrix), show_progress=False)
    return model


class ItemKNNRecommender:
    """implicit's item-item nearest neighbours (cosine or BM25-weighted), past items not filtered."""

    def __init__(self, kind: str, fallback: Recommender, *, neighbours: int = 100) -> None:
        if kind not in ("cosine", "bm25"):
            raise ValueError(f"kind must be 'cosine' or 'bm25'; got {kind!r}")
        self.kind = kind
        self.fallback = fallback
        self.neighbours = neighbours
        self.name = f"item-kNN ({kind})"

    def fit(self, data: Interactions) -> ItemKNNRecommender:
        self.model_ = item_knn_similarity(self.kind, data.matrix, self.neighbours)
        self.matrix_ = data.matrix
        self.fallback.fit(data)
        return self

    def recommend(self, user_rows: np.ndarray, k: int) -> np.ndarray:
        out = self.fallback.recommend(user_rows, k).copy()
        warm = np.flatnonzero(user_rows >= 0)
        if len(warm):
            rows = user_rows[warm]
            ids, scores = self.model_.recommend(rows, self.matrix_[rows], N=k, filter_already_liked_items=False)
            ids = np.where(scores > -np.inf, ids, -1)
            fill = self.fallback.recommend(np.array([-1]), k)[0]
            out[warm] = _pad([r[r >= 0] for r in ids], fill, k)
        return out
