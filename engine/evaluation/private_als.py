"""``vitrine evaluate private-als``: what user-level DP item factors cost ALS in MAP@K, on a time split.

Every model is fitted on the same training days and scored on the held-out days' purchases, as
``vitrine evaluate recommenders`` scores them: popularity, implicit's ALS (the non-private baseline), private ALS
without noise (the same contribution bounds, clipping and item selection: what the bounds alone cost), and
private ALS at each ε (``engine.recommend.private_als``). Shoppers unseen in training get recent popularity.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from tqdm.auto import tqdm

from engine.recommend.baselines import FactorRecommender, PopularityRecommender, build_interactions
from engine.recommend.private_als import PrivateALSConfig, PrivateALSRecommender
from engine.recommend.ranking import build_task, recommend_all, task_metrics
from features.readers import read_store
from features.split import time_split
from features.weighting import WeightingConfig
from models.embeddings import EmbeddingConfig
from models.io import write_json

logger = logging.getLogger(__name__)

ANCHOR = "private ALS (Chien et al., ICML 2021): about 6 points below non-private ALS on MovieLens at ε ≤ 10"


def evaluate_private_als(
    data_path: Path,
    *,
    epsilons: tuple[float, ...] = (1.0, 8.0),
    test_days: int = 1,
    k: int = 12,
    seed: int = 0,
    factors: int = 64,
    iterations: int = 5,
    max_items_per_user: int = 8,
    top_items: int = 2000,
    out: Path | None = None,
    show_progress: bool = True,
) -> dict:
    """MAP@K of private ALS at each ε against non-private ALS and popularity (module docstring)."""
    if not epsilons or any(not (e > 0) for e in epsilons):
        raise ValueError(f"epsilons must be positive (inf: no noise); got {epsilons}")
    store = read_store(data_path)
    split = time_split(store.events, test_days=test_days)
    weighting = WeightingConfig()
    data = build_interactions(split.train, weighting)
    task = build_task(split.test, data.users.index_, data.items.index_)
    recent = lambda: PopularityRecommender(window_days=1)  # noqa: E731 - a fresh fallback per model
    base = PrivateALSConfig(
        factors=factors, iterations=iterations, max_items_per_user=max_items_per_user, top_items=top_items
    )
    budgets = sorted(
        {None if math.isinf(e) else e for e in epsilons} | {None}, key=lambda e: -math.inf if e is None else -e
    )
    suite = [
        PopularityRecommender(),
        recent(),
        FactorRecommender(EmbeddingConfig(factors=factors), recent(), seed=seed),
        *(
            PrivateALSRecommender(PrivateALSConfig(**{**vars(base), "epsilon": e}), recent(), seed=seed)
            for e in budgets
        ),
    ]
    results = {}
    for rec in tqdm(suite, desc="recommenders", disable=not show_progress):
        started = time.perf_counter()
        rec.fit(data)
        fitted = time.perf_counter() - started
        metrics = task_metrics(recommend_all(rec.recommend, task, k), task)
        results[rec.name] = {**metrics, "fit_seconds": round(fitted, 1)}
        if isinstance(rec, PrivateALSRecommender):
            results[rec.name]["privacy"] = rec.result_.record()
        logger.info("%s: warm map@%d %.4f", rec.name, k, metrics["warm"][f"map@{k}"])
    report = {
        "data": store.name,
        "k": k,
        "split": split.describe(),
        "warm_users": int(task.warm.sum()),
        "test_users": len(task.user_rows),
        "config": vars(base) | {"epsilon": list(epsilons)},
        "results": results,
        "anchor": ANCHOR,
    }
    if out is not None:
        write_json(Path(out), report, default=float)
    return report


def render(report: dict) -> str:
    k = report["k"]
    baseline = next(r for name, r in report["results"].items() if name.startswith("als"))
    base_map = baseline["warm"][f"map@{k}"]
    lines = [
        f"Private ALS on {report['data']}: test from {report['split']['cutoff']}, {report['test_users']} test "
        f"shoppers ({report['warm_users']} seen in training); purchases as targets",
        f"  {'model':<42} {'warm map@' + str(k):>12} {'vs ALS':>8} {'all map@' + str(k):>11} "
        f"{'warm recall':>12} {'ε spent':>8} {'fit s':>7}",
    ]
    for name, r in report["results"].items():
        warm = r["warm"][f"map@{k}"]
        eps = r.get("privacy", {}).get("epsilon")
        lines.append(
            f"  {name:<42} {warm:>12.4f} {warm / base_map - 1 if base_map else float('nan'):>+8.1%} "
            f"{r['all'][f'map@{k}']:>11.4f} {r['warm'][f'recall@{k}']:>12.4f} "
            f"{'-' if eps is None else f'{eps:.2f}':>8} {r['fit_seconds']:>7.1f}"
        )
    lines.append(f"  Anchor: {report['anchor']}")
    return "\n".join(lines)
