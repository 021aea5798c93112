"""Offline ranking evaluation on a time split: Recall@K, NDCG@K, MAP@K and catalogue coverage.

Definitions (binary relevance; ``rel`` = the items a user bought in the test period):
    Recall@K = |top-K ∩ rel| / min(|rel|, K)
    NDCG@K   = Σ_{r ≤ K, item_r ∈ rel} 1/log2(r + 1)  /  Σ_{r ≤ min(|rel|, K)} 1/log2(r + 1)
    MAP@K    = mean over users of (1 / min(|rel|, K)) Σ_{r ≤ K} P@r · [item_r ∈ rel]   (the H&M metric)
    coverage = share of the training catalogue that appears in anyone's top-K
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

RecommendFn = Callable[[np.ndarray, int], np.ndarray]  # (B,) user rows (-1 = unknown), k -> (B, k) item rows


@dataclass(frozen=True, kw_only=True)
class RankingTask:
    """Who is evaluated and on what: test users' relevant item rows in the training item vocabulary."""

    user_rows: np.ndarray  # (U,) row in the training user vocabulary, -1 for users unseen in training
    relevant: list[np.ndarray]  # per user, the relevant item rows (-1 for items unseen in training)
    n_items: int

    @property
    def warm(self) -> np.ndarray:
        return self.user_rows >= 0


def build_task(
    test: pd.DataFrame,
    user_index: pd.Index,
    item_index: pd.Index,
    *,
    target_events: tuple[str, ...] = ("purchase",),
) -> RankingTask:
    """Relevant items per test user: the distinct items of their ``target_events`` in the test period."""
    t = test[test["event_type"].astype(str).isin(target_events)]
    if t.empty:
        raise ValueError(f"the test period has no {'/'.join(target_events)} events to evaluate on")
    t = t.drop_duplicates(["user_id", "item_id"])
    users = pd.Index(pd.unique(t["user_id"]))
    item_rows = item_index.get_indexer(pd.Index(t["item_id"]))
    by_user = pd.Categorical(t["user_id"], categories=users)
    groups = pd.Series(item_rows).groupby(by_user, observed=True)  # type: ignore[call-overload]  # pandas-stubs
    relevant = [g.to_numpy() for _, g in groups]
    return RankingTask(user_rows=user_index.get_indexer(users), relevant=relevant, n_items=len(item_index))


def per_user_metrics(top: np.ndarray, relevant: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Each user's recall, NDCG and average precision at K = top.shape[1]: (U,) arrays."""
    k = top.shape[1]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    recall, ndcg, ap = np.zeros(len(top)), np.zeros(len(top)), np.zeros(len(top))
    for u, (rec, rel) in enumerate(zip(top, relevant, strict=True)):
        rel_set = set(rel.tolist())
        hits = np.fromiter((r in rel_set for r in rec), dtype=bool, count=k)
        denom = min(len(rel_set), k)
        recall[u] = hits.sum() / denom
        ndcg[u] = (hits * discounts).sum() / discounts[:denom].sum()
        precision_at = np.cumsum(hits) / np.arange(1, k + 1)
        ap[u] = (precision_at * hits).sum() / denom
    return {"recall": recall, "ndcg": ndcg, "ap": ap}


def ranking_metrics(top: np.ndarray, relevant: list[np.ndarray], *, n_items: int) -> dict[str, float]:
    """Metrics of (U, K) recommended item rows against per-user relevant rows."""
    k = top.shape[1]
    if len(top) == 0:  # no such users (e.g. no test shopper was seen in training): undefined, not zero
        nan = float("nan")
        return {f"recall@{k}": nan, f"ndcg@{k}": nan, f"map@{k}": nan, "coverage": 0.0, "users": 0}
    valid = top[top >= 0]
    return {
        **mean_metrics(per_user_metrics(top, relevant), k),
        "coverage": float(len(np.unique(valid)) / n_items) if n_items else 0.0,
        "users": len(top),
    }


def mean_metrics(per_user: dict[str, np.ndarray], k: int) -> dict[str, float]:
    """Recall@K, NDCG@K and MAP@K: the means of ``per_user_metrics``' arrays."""
    return {
        f"recall@{k}": float(per_user["recall"].mean()),
        f"ndcg@{k}": float(per_user["ndcg"].mean()),
        f"map@{k}": float(per_user["ap"].mean()),
    }


def recommend_all(recommend: RecommendFn, task: RankingTask, k: int, *, batch_size: int = 2048) -> np.ndarray:
    """(U, k) recommended item rows for every test user of ``task``, in batches."""
    return np.concatenate(
        [recommend(task.user_rows[s : s + batch_size], k) for s in range(0, len(task.user_rows), batch_size)]
    )[:, :k]


def task_metrics(top: np.ndarray, task: RankingTask) -> dict[str, dict]:
    """Metrics of ``recommend_all``'s output over warm users (seen in training) and over all test users."""
    warm = task.warm
    return {
        "warm": ranking_metrics(
            top[warm], [r for r, w in zip(task.relevant, warm, strict=True) if w], n_items=task.n_items
        ),
        "all": ranking_metrics(top, task.relevant, n_items=task.n_items),
    }


def evaluate(recommend: RecommendFn, task: RankingTask, k: int, *, batch_size: int = 2048) -> dict[str, dict]:
    """Metrics over warm users (seen in training) and over all test users."""
    return task_metrics(recommend_all(recommend, task, k, batch_size=batch_size), task)


def paired_ratio_ci(a: np.ndarray, b: np.ndarray, *, seed: int, draws: int = 2000) -> list[float]:
    """95% bootstrap interval of mean(a) / mean(b), resampling users (each keeps their own pair)."""
    if len(a) == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), (draws, len(a)))
    den = b[idx].mean(axis=1)
    ratios = a[idx].mean(axis=1)[den > 0] / den[den > 0]
    if len(ratios) == 0:
        return [float("nan"), float("nan")]
    return [float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))]


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Row-wise indices of the k largest scores, best first. scores: (B, n)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)
