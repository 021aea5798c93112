"""``vitrine evaluate recommenders``: Vitrine's default recommender against named baselines on a time split.

All models are fitted on the same training period and scored on the same held-out days, for shoppers seen
in training (warm) and for all test shoppers (unseen ones get each model's fallback: recent best sellers).
Baselines: global popularity, recent popularity (last day), repurchase + popularity, implicit's ALS, BPR,
cosine item-kNN and BM25 item-kNN.

Vitrine's recommender is measured as a bundle carries it and serving loads it (:class:`ServedRanker`): fitted
by the training step (``fit_ranker``), written as the bundle's ``ranker/`` folder, read back by serving's
loader and asked for each shopper's top-K through serving's own ranker object.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from engine.recommend.baselines import (
    FactorRecommender,
    ItemKNNRecommender,
    PopularityRecommender,
    RepurchaseRecommender,
    build_interactions,
)
from engine.recommend.ranker_files import save_ranker
from engine.recommend.ranking import build_task, paired_ratio_ci, per_user_metrics, recommend_all, task_metrics
from engine.recommend.reranker import RerankerConfig, RerankRecommender, fit_ranker
from engine.serving.ranker import ShopperRanker
from features.readers import read_store
from features.split import TimeSplit, time_split, validation_splits
from features.weighting import WeightingConfig
from models.embeddings import EmbeddingConfig
from models.io import write_json

logger = logging.getLogger(__name__)


class ServedRanker:
    """Vitrine's ranker as the storefront gets it: ``fit`` trains it as `vitrine train` does, writes the bundle's
    ``ranker/`` folder and loads it back with serving's loader; ``recommend`` asks serving's ranker
    (:meth:`ShopperRanker.top_items`) by shopper id."""

    name = RerankRecommender.name

    def __init__(self, config: RerankerConfig, *, catalogue: pd.DataFrame, weighting: WeightingConfig, seed: int):
        self.config = config
        self.catalogue = catalogue  # with an item_id column: group, attributes, listed price
        self.weighting = weighting
        self.seed = seed

    def fit(self, data) -> ServedRanker:
        import tempfile

        events = data.events.drop(columns=["user_row", "item_row", "weight"])
        ranker = fit_ranker(events, self.catalogue, self.weighting, self.config, seed=self.seed)
        self.training_ = ranker.training_
        with tempfile.TemporaryDirectory(prefix="vitrine-ranker-") as folder:
            save_ranker(ranker, Path(folder))
            self.served_ = ShopperRanker.load(Path(folder))
        self.users_, self.items_ = data.users, data.items
        return self

    def recommend(self, user_rows: np.ndarray, k: int) -> np.ndarray:
        ids = [str(self.users_.ids_[r]) if r >= 0 else "" for r in user_rows]
        top = self.served_.top_items(ids, k)
        return np.stack([self.items_.transform(np.asarray(t, dtype=object)) for t in top])


def recommender_suite(catalogue, weighting: WeightingConfig, test_days: int, seed: int) -> list:
    """The baselines and Vitrine's recommender as served; ``catalogue`` has an item_id column (group,
    attributes, price)."""
    recent = lambda: PopularityRecommender(window_days=1)  # noqa: E731 - a fresh fallback per model
    return [
        PopularityRecommender(),
        recent(),
        RepurchaseRecommender(PopularityRecommender()),
        RepurchaseRecommender(recent()),
        FactorRecommender(EmbeddingConfig(factors=64), recent(), seed=seed),
        FactorRecommender(  # one thread: BPR's report then reproduces for a seed (a 2-core fit took 5.5 s)
            EmbeddingConfig(algorithm="bpr", factors=64, iterations=100, learning_rate=0.05, threads=1),
            recent(),
            seed=seed,
        ),
        ItemKNNRecommender("cosine", recent()),
        ItemKNNRecommender("bm25", recent()),
        ServedRanker(RerankerConfig(label_days=test_days), catalogue=catalogue, weighting=weighting, seed=seed),
    ]


def score_split(
    split: TimeSplit,
    catalogue: pd.DataFrame,
    *,
    suite: Callable[..., list],
    k: int,
    seed: int,
    half_life_days: float | None,
    test_days: int,
    show_progress: bool,
) -> dict:
    """Fit every model of ``suite`` on ``split.train``, score it on ``split.test``; the report of one split."""
    weighting = WeightingConfig(half_life_days=half_life_days)
    data = build_interactions(split.train, weighting)
    task = build_task(split.test, data.users.index_, data.items.index_)
    results, warm_ap = {}, {}
    relevant_warm = [r for r, w in zip(task.relevant, task.warm, strict=True) if w]
    for rec in tqdm(suite(catalogue, weighting, test_days, seed), desc="recommenders", disable=not show_progress):
        started = time.perf_counter()
        rec.fit(data)
        fitted = time.perf_counter() - started
        top = recommend_all(rec.recommend, task, k)
        metrics = task_metrics(top, task)
        warm_ap[rec.name] = per_user_metrics(top[task.warm], relevant_warm)["ap"]
        results[rec.name] = {
            **metrics,
            "fit_seconds": round(fitted, 1),
            "total_seconds": round(time.perf_counter() - started, 1),
        }
        if hasattr(rec, "training_"):  # what a learned model was trained on (the reranker)
            results[rec.name]["training"] = rec.training_
        logger.info(
            "%s: warm map@%d %.4f, all %.4f", rec.name, k, metrics["warm"][f"map@{k}"], metrics["all"][f"map@{k}"]
        )
    vitrine = RerankRecommender.name
    return {
        "split": split.describe(),
        "warm_users": int(task.warm.sum()),
        "test_users": len(task.user_rows),
        "results": results,
        "vitrine_vs_best_warm_baseline": _gain(results, warm_ap, vitrine, k=k, seed=seed),
    }


def _gain(results: dict, warm_ap: dict, vitrine: str, *, k: int, seed: int) -> dict:
    """Vitrine's relative warm MAP@K gain over the best baseline, with a paired-bootstrap 95% interval."""
    if len(warm_ap[vitrine]) == 0:
        return {
            "baseline": None,
            "relative_gain": None,
            "relative_gain_ci95": None,
            "note": "no test shopper was seen in training: there is no warm comparison",
        }
    baselines = {n: r for n, r in results.items() if n != vitrine}
    best = max(baselines, key=lambda n: baselines[n]["warm"][f"map@{k}"])
    # one period's shoppers are a sample: how far the gain could move with another sample of them
    ratio_ci = paired_ratio_ci(warm_ap[vitrine], warm_ap[best], seed=seed)
    return {
        "baseline": best,
        "relative_gain": results[vitrine]["warm"][f"map@{k}"] / max(baselines[best]["warm"][f"map@{k}"], 1e-12) - 1.0,
        "relative_gain_ci95": [r - 1.0 for r in ratio_ci],
    }


def evaluate_recommenders(
    data_path: Path,
    *,
    test_days: int = 1,
    k: int = 12,
    out: Path | None = None,
    seed: int = 0,
    half_life_days: float | None = 21.0,
    validation_periods: int = 0,
    suite: Callable[..., list] = recommender_suite,
    show_progress: bool = True,
) -> dict:
    """Score ``suite`` on the last ``test_days`` days; with ``validation_periods``, on that many earlier
    periods of the same length instead (the test period is then never scored: use it to choose models)."""
    store = read_store(data_path)
    if validation_periods:
        splits = validation_splits(store.events, test_days=test_days, periods=validation_periods)
    else:
        splits = [time_split(store.events, test_days=test_days)]
    score = partial(
        score_split,
        catalogue=store.catalogue,
        suite=suite,
        k=k,
        seed=seed,
        half_life_days=half_life_days,
        test_days=test_days,
        show_progress=show_progress,
    )
    periods = [score(split) for split in splits]
    if not validation_periods:
        report = {"data": store.name, "k": k, **periods[0]}
    else:
        gains = [p["vitrine_vs_best_warm_baseline"]["relative_gain"] for p in periods]
        gains = [g for g in gains if g is not None]  # periods without warm shoppers have none
        report = {
            "data": store.name,
            "k": k,
            "validation": periods,
            "mean_relative_gain": float(np.mean(gains)) if gains else None,
            "note": "validation periods cut from before the test period; the test period was not scored",
        }
    if out is not None:
        write_json(out, report)
    return report


def render(report: dict) -> str:
    if "validation" in report:
        blocks = [
            _render_split({"data": report["data"], "k": report["k"], **p}, "validation") for p in report["validation"]
        ]
        mean = report["mean_relative_gain"]
        blocks.append(
            f"Mean gain over the best warm baseline across {len(report['validation'])} validation periods: "
            f"{'none (no warm shoppers)' if mean is None else f'{mean:+.2%}'} (the test period was not scored)"
        )
        return "\n\n".join(blocks)
    return _render_split(report, "test")


def _render_split(report: dict, period: str) -> str:
    k = report["k"]
    lines = [
        f"Recommenders on {report['data']}: {period} from {report['split']['cutoff']}, "
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
    trained = report["results"].get(RerankRecommender.name, {}).get("training")
    if trained:
        lines.append(
            f"  Vitrine's ranker: {trained['ranker']}; {trained['positives']} purchases among "
            f"{trained['pairs']} candidate pairs in {trained['windows']} label windows"
        )
    g = report["vitrine_vs_best_warm_baseline"]
    if g["relative_gain"] is None:
        lines.append(f"  Vitrine vs best warm baseline: {g['note']}")
        return "\n".join(lines)
    low, high = g["relative_gain_ci95"]
    lines.append(
        f"  Vitrine vs best warm baseline ({g['baseline']}): {g['relative_gain']:+.1%} "
        f"(95% interval over shoppers, paired bootstrap: {low:+.1%} to {high:+.1%})"
    )
    return "\n".join(lines)
