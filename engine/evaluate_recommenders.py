"""``vitrine evaluate recommenders``: Vitrine's default recommender against named baselines on a time split.

All models are fitted on the same training period and scored on the same held-out days, for shoppers seen
in training (warm) and for all test shoppers (unseen ones get each model's fallback: recent best sellers).
Baselines: global popularity, recent popularity (last day), repurchase + popularity, implicit's ALS, BPR,
cosine item-kNN and BM25 item-kNN.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from tqdm.auto import tqdm

from engine.ranking import build_task, evaluate
from engine.recommenders import (
    FactorRecommender,
    ItemKNNRecommender,
    PopularityRecommender,
    RepurchaseRecommender,
    build_interactions,
)
from engine.reranker import RerankerConfig, RerankRecommender
from features.readers import read_store
from features.split import prices_as_of, time_split
from features.weighting import WeightingConfig
from models._io import write_json
from models.embeddings import EmbeddingConfig

logger = logging.getLogger(__name__)


def recommender_suite(catalogue, weighting: WeightingConfig, test_days: int, seed: int) -> list:
    """The baselines and Vitrine's recommender; ``catalogue`` is indexed by item_id (group, attributes, price)."""
    recent = lambda: PopularityRecommender(window_days=1)  # noqa: E731 - a fresh fallback per model
    return [
        PopularityRecommender(),
        recent(),
        RepurchaseRecommender(PopularityRecommender()),
        RepurchaseRecommender(recent()),
        FactorRecommender(EmbeddingConfig(factors=64), recent(), seed=seed),
        FactorRecommender(
            EmbeddingConfig(algorithm="bpr", factors=64, iterations=100, learning_rate=0.05), recent(), seed=seed
        ),
        ItemKNNRecommender("cosine", recent()),
        ItemKNNRecommender("bm25", recent()),
        RerankRecommender(
            RerankerConfig(label_days=test_days),
            item_groups=catalogue.get("group"),
            item_attributes=catalogue,
            weighting=weighting,
            seed=seed,
        ),
    ]


def evaluate_recommenders(
    data_path: Path,
    *,
    test_days: int = 1,
    k: int = 12,
    out: Path | None = None,
    seed: int = 0,
    half_life_days: float | None = 21.0,
    show_progress: bool = True,
) -> dict:
    store = read_store(data_path)
    split = time_split(store.events, test_days=test_days)
    weighting = WeightingConfig(half_life_days=half_life_days)
    data = build_interactions(split.train, weighting)
    task = build_task(split.test, data.users.index_, data.items.index_)
    catalogue = prices_as_of(store.catalogue, split.train).set_index("item_id")
    results = {}
    for rec in tqdm(
        recommender_suite(catalogue, weighting, test_days, seed), desc="recommenders", disable=not show_progress
    ):
        started = time.perf_counter()
        rec.fit(data)
        fitted = time.perf_counter() - started
        metrics = evaluate(rec.recommend, task, k)
        results[rec.name] = {
            **metrics,
            "fit_seconds": round(fitted, 1),
            "total_seconds": round(time.perf_counter() - started, 1),
        }
        logger.info(
            "%s: warm map@%d %.4f, all %.4f", rec.name, k, metrics["warm"][f"map@{k}"], metrics["all"][f"map@{k}"]
        )
    vitrine = RerankRecommender.name
    baselines = {n: r for n, r in results.items() if n != vitrine}
    best_warm = max(baselines, key=lambda n: baselines[n]["warm"][f"map@{k}"])
    report = {
        "data": store.name,
        "split": split.describe(),
        "k": k,
        "warm_users": int(task.warm.sum()),
        "test_users": len(task.user_rows),
        "results": results,
        "vitrine_vs_best_warm_baseline": {
            "baseline": best_warm,
            "relative_gain": results[vitrine]["warm"][f"map@{k}"] / max(baselines[best_warm]["warm"][f"map@{k}"], 1e-12)
            - 1.0,
        },
    }
    if out is not None:
        write_json(out, report)
    return report


def render(report: dict) -> str:
    k = report["k"]
    lines = [
        f"Recommenders on {report['data']}: test from {report['split']['cutoff']}, "
        f"{report['test_users']} test shoppers ({report['warm_users']} seen in training); purchases as targets",
        f"  {'model':<38} {'warm map@' + str(k):>12} {'all map@' + str(k):>11} {'warm recall':>12} "
        f"{'warm ndcg':>10} {'coverage':>9} {'fit s':>7}",
    ]
    for name, r in report["results"].items():
        lines.append(
            f"  {name:<38} {r['warm'][f'map@{k}']:>12.4f} {r['all'][f'map@{k}']:>11.4f} "
            f"{r['warm'][f'recall@{k}']:>12.4f} {r['warm'][f'ndcg@{k}']:>10.4f} {r['all']['coverage']:>9.3f} "
            f"{r['fit_seconds']:>7.1f}"
        )
    g = report["vitrine_vs_best_warm_baseline"]
    lines.append(f"  Vitrine vs best warm baseline ({g['baseline']}): {g['relative_gain']:+.1%}")
    return "\n".join(lines)
