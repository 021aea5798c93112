"""``vitrine evaluate sessions``: does the next image set follow the session, and what does fold-in cost?

Two measurements, each against its own baseline on the same data:

1. Session response (a bundle, any store). For sampled shoppers — known ones and anonymous ones — a
   target (class, colour) is drawn from the catalogue's combinations with at least ``views`` items; the
   shopper views ``views`` distinct items of it, and the share of the next image set whose condition is
   that class and colour is read, by the condition asked for and by the bundle's classifier judging the
   generated pixels. Baseline: the same shopper's set without the session. The catalogue share of the
   target is given too (what a set blind to the session would hold on average).
2. Fold-in against training (a log with a time split, e.g. H&M's last day). Half of the warm test shoppers
   are removed from the training matrix; their training-period history is then folded in as one session
   (one ALS half-step against the fixed item factors, as serving does). MAP@K of these shoppers is
   compared with the same shoppers trained in (the same ALS on the full matrix): the price of serving a
   shopper from a session instead of from a retrain.
"""

from __future__ import annotations

import io
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from PIL import Image
from tqdm.auto import tqdm

from engine.evaluation.served import judge
from engine.recommend.baselines import build_interactions
from engine.recommend.factors import fit_embeddings
from engine.recommend.ranking import build_task, mean_metrics, per_user_metrics, ranking_metrics, top_k
from engine.serving.personaliser import Personaliser
from engine.serving.sessions import SessionEvent, with_session
from features.readers import read_store
from features.split import TimeSplit, time_split, validation_splits
from features.weighting import WeightingConfig
from models.embeddings import EmbeddingConfig
from models.io import write_json

logger = logging.getLogger(__name__)


def _served_pixels(personaliser: Personaliser, result) -> torch.Tensor:
    """The images exactly as served (their PNGs), as (n, C, H, W) floats in [-1, 1] for the classifier."""
    arrays = [np.asarray(Image.open(io.BytesIO(personaliser.render_png(img.image_id)))) for img in result.images]
    x = torch.as_tensor(np.stack(arrays)).float().div(127.5).sub(1.0)
    return (x[..., None] if x.ndim == 3 else x).permute(0, 3, 1, 2)


def session_response(
    personaliser: Personaliser,
    *,
    users: int = 200,
    views: int = 5,
    n: int = 8,
    seed: int = 0,
    show_progress: bool = True,
) -> dict:
    """Share of the next set in the (class, colour) just viewed ``views`` times, before and after."""
    bundle = personaliser.bundle
    if len(bundle.attributes) < 2:
        raise ValueError(f"session response needs a class and a colour attribute; the bundle has {bundle.attributes}")
    catalogue = bundle.catalogue
    known_items = bundle.embedding_rows >= 0  # items the embedding model can fold in
    codes = bundle.codes[:, :2]
    combos, combo_of_item = np.unique(codes[known_items], axis=0, return_inverse=True)
    counts = np.bincount(combo_of_item.ravel(), minlength=len(combos))
    eligible = np.flatnonzero(counts >= views)
    if not len(eligible):
        raise ValueError(f"no (class, colour) has {views} items the embedding model knows")
    item_ids = catalogue["item_id"].to_numpy()[known_items]
    rng = np.random.default_rng(seed)
    known_users = rng.choice(bundle.embeddings.user_ids, min(users, len(bundle.embeddings.user_ids)), replace=False)
    groups = {"known": list(known_users), "anonymous": [f"anon-session-{k}" for k in range(users)]}
    now = datetime.now(UTC)
    out: dict = {"views": views, "set_size": n, "attributes": list(bundle.attributes[:2])}
    for group, ids in groups.items():
        before = {"requested": [], "judged": []}
        after = {"requested": [], "judged": []}
        base_rate = []
        for user in tqdm(ids, desc=f"session response ({group})", disable=not show_progress):
            target = combos[rng.choice(eligible)]
            pool = item_ids[(codes[known_items] == target).all(axis=1)]
            viewed = rng.choice(pool, views, replace=False)
            events = [SessionEvent(item_id=str(i), event_type="view", timestamp=now) for i in viewed]
            for store, session in ((before, None), (after, events)):
                result = personaliser.image_set(user, n, session=session)
                asked = np.array([bundle.encoder.encode(img.condition)[:2] for img in result.images])
                judged = judge(bundle, _served_pixels(personaliser, result))[:, :2]
                store["requested"].append(float((asked == target).all(axis=1).mean()))
                store["judged"].append(float((judged == target).all(axis=1).mean()))
            base_rate.append(float((codes == target).all(axis=1).mean()))
        out[group] = {
            "shoppers": len(ids),
            "catalogue_share": float(np.mean(base_rate)),
            "before": {k: float(np.mean(v)) for k, v in before.items()},
            "after": {k: float(np.mean(v)) for k, v in after.items()},
        }
    return out


def fold_in_against_training(
    events: pd.DataFrame,
    *,
    test_days: int = 1,
    k: int = 12,
    share: float = 0.5,
    config: EmbeddingConfig | None = None,
    half_life_days: float | None = 21.0,
    seed: int = 0,
) -> dict:
    """MAP@K of shoppers served by folding their history in as a session vs trained into the model."""
    if not 0 < share < 1:
        raise ValueError(f"share must lie in (0, 1); got {share}")
    config = config or EmbeddingConfig(factors=64)
    split = time_split(events, test_days=test_days)
    data = build_interactions(split.train, WeightingConfig(half_life_days=half_life_days))
    task = build_task(split.test, data.users.index_, data.items.index_)
    warm = np.flatnonzero(task.warm)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(warm, max(1, int(len(warm) * share)), replace=False))
    rows = task.user_rows[chosen]
    relevant = [task.relevant[i] for i in chosen]

    started = time.perf_counter()
    full = fit_embeddings(data.matrix, data.users.ids_, data.items.ids_, config, seed=seed, show_progress=False)
    trained_in = ranking_metrics(
        top_k(full.user_factors[rows] @ full.item_factors.T, k), relevant, n_items=task.n_items
    )

    keep = np.ones(data.matrix.shape[0], dtype=bool)
    keep[rows] = False
    held_out = sp.diags(keep.astype(np.float32)) @ data.matrix  # their rows emptied; the item vocabulary stays
    without = fit_embeddings(
        sp.csr_matrix(held_out), data.users.ids_, data.items.ids_, config, seed=seed, show_progress=False
    )
    fold_seconds = []
    vectors = np.empty((len(rows), without.dim), dtype=np.float32)
    for j, u in enumerate(rows):
        history = data.matrix[u]
        t = time.perf_counter()
        vectors[j] = without.fold_in(history.indices, history.data)
        fold_seconds.append(time.perf_counter() - t)
    folded = ranking_metrics(top_k(vectors @ without.item_factors.T, k), relevant, n_items=task.n_items)
    return {
        "test_days": test_days,
        "k": k,
        "shoppers": len(rows),
        "warm_test_shoppers": len(warm),
        "model": f"{config.algorithm} ({config.factors} factors)",
        "trained_in": trained_in,
        "folded_in": folded,
        "map_ratio": folded[f"map@{k}"] / trained_in[f"map@{k}"] if trained_in[f"map@{k}"] > 0 else float("nan"),
        "fold_in_ms_p50": float(np.percentile(fold_seconds, 50) * 1e3),
        "fold_in_ms_p99": float(np.percentile(fold_seconds, 99) * 1e3),
        "seconds": round(time.perf_counter() - started, 1),
    }


def session_weight_study(
    events: pd.DataFrame,
    *,
    weights: tuple[float, ...] = (0, 1, 2, 5, 10, 20),
    test_days: int = 1,
    periods: int = 1,
    k: int = 12,
    config: EmbeddingConfig | None = None,
    half_life_days: float | None = 21.0,
    seed: int = 0,
) -> dict:
    """How much a known shopper's latest session should count against their history, judged on purchases.

    The test period is left out. For each of ``periods`` target periods of ``test_days`` days before it
    (latest first), ALS is trained on the log up to the day before the target; that last day is each
    shopper's "session", folded onto their trained history at each weight in ``weights`` (0: history
    alone), and MAP@K is measured on their purchases in the target. Shoppers of all periods are pooled (one
    H&M day gives only about 100 with a session the day before).
    """
    config = config or EmbeddingConfig(factors=64)
    weighting = WeightingConfig(half_life_days=half_life_days)
    pooled: dict[str, list[dict[str, np.ndarray]]] = {str(w): [] for w in weights}
    described = []
    for target in validation_splits(events, test_days=test_days, periods=periods):
        history = time_split(target.train, test_days=1)
        found = _session_weight_period(
            history, target, weights=weights, k=k, config=config, weighting=weighting, seed=seed
        )
        described.append(
            {
                "session_day": history.cutoff.isoformat(),
                "target_from": target.cutoff.isoformat(),
                "shoppers": found["shoppers"],
            }
        )
        for w, per_user in found["by_weight"].items():
            pooled[w].append(per_user)
    shoppers = sum(p["shoppers"] for p in described)
    if shoppers == 0:
        raise ValueError(
            f"no shopper in {periods} period(s) has a history, a session the day before and a purchase after it"
        )
    by_weight = {
        w: mean_metrics({m: np.concatenate([p[m] for p in parts]) for m in ("recall", "ndcg", "ap")}, k)
        for w, parts in pooled.items()
    }
    return {"k": k, "periods": described, "shoppers": shoppers, "by_weight": by_weight}


def _session_weight_period(
    history: TimeSplit,
    target: TimeSplit,
    *,
    weights: tuple[float, ...],
    k: int,
    config: EmbeddingConfig,
    weighting: WeightingConfig,
    seed: int,
) -> dict:
    """One target period of the session-weight study: each chosen shopper's metrics at each weight."""
    empty = {str(w): {m: np.empty(0) for m in ("recall", "ndcg", "ap")} for w in weights}
    if not (target.test["event_type"].astype(str) == "purchase").any():
        return {"shoppers": 0, "by_weight": empty}
    data = build_interactions(history.train, weighting)
    model = fit_embeddings(data.matrix, data.users.ids_, data.items.ids_, config, seed=seed, show_progress=False)
    task = build_task(target.test, data.users.index_, data.items.index_)
    session = history.test
    s_user = data.users.transform(session["user_id"])
    s_item = data.items.transform(session["item_id"])
    s_strength = session["event_type"].astype(str).map(weighting.type_weights).fillna(0.0).to_numpy(float)
    ok = (s_user >= 0) & (s_item >= 0)
    kept = np.flatnonzero(ok)
    by_user = {u: kept[at] for u, at in pd.Series(s_user[ok]).groupby(s_user[ok]).indices.items()}
    chosen = [j for j, u in enumerate(task.user_rows) if u in by_user]
    if not chosen:
        return {"shoppers": 0, "by_weight": empty}
    rows = task.user_rows[chosen]
    relevant = [task.relevant[j] for j in chosen]
    results = {}
    for w in weights:
        vectors = np.empty((len(rows), model.dim), dtype=np.float32)
        for j, u in enumerate(rows):
            h, e = data.matrix[u], by_user[u]
            items, strengths = with_session(h.indices, h.data, s_item[e], s_strength[e], session_weight=w)
            vectors[j] = model.fold_in(items, strengths)
        results[str(w)] = per_user_metrics(top_k(vectors @ model.item_factors.T, k), relevant)
    return {"shoppers": len(rows), "by_weight": results}


def render(report: dict) -> str:
    lines = []
    if "session_response" in report:
        r = report["session_response"]
        lines.append(f"session response: share of the next {r['set_size']} images in the viewed class+colour")
        lines.append(f"  after {r['views']} views        before (req/judged)   after (req/judged)   catalogue share")
        for group in ("known", "anonymous"):
            g = r[group]
            lines.append(
                f"  {group:<10} ({g['shoppers']:>4})  {g['before']['requested']:.3f} / {g['before']['judged']:.3f}"
                f"        {g['after']['requested']:.3f} / {g['after']['judged']:.3f}        {g['catalogue_share']:.3f}"
            )
    if "fold_in" in report:
        r = report["fold_in"]
        key = f"map@{r['k']}"
        lines.append(
            f"fold-in vs trained-in ({r['model']}, {r['shoppers']} warm test shoppers, last {r['test_days']} day(s)):"
        )
        for name in ("trained_in", "folded_in"):
            m, k = r[name], r["k"]
            lines.append(
                f"  {name:<11} MAP@{k} {m[key]:.4f}  recall@{k} {m[f'recall@{k}']:.4f}  ndcg@{k} {m[f'ndcg@{k}']:.4f}"
            )
        lines.append(
            f"  fold-in keeps {r['map_ratio']:.1%} of MAP@{r['k']}; fold-in p50 {r['fold_in_ms_p50']:.2f} ms,"
            f" p99 {r['fold_in_ms_p99']:.2f} ms"
        )
    if "session_weight" in report and "skipped" in report["session_weight"]:
        lines.append(f"session weight study skipped: {report['session_weight']['skipped']}")
    elif "session_weight" in report:
        r = report["session_weight"]
        k = r["k"]
        days = ", ".join(f"{p['session_day'][:10]} → {p['target_from'][:10]}" for p in r["periods"])
        lines.append(
            f"session weight against history ({r['shoppers']} shoppers; session day → purchases from: {days}; "
            "the test period left out):"
        )
        for w, m in r["by_weight"].items():
            lines.append(f"  session x{w:<5} MAP@{k} {m[f'map@{k}']:.4f}  recall@{k} {m[f'recall@{k}']:.4f}")
    return "\n".join(lines)


def evaluate_sessions(
    *,
    artifacts: Path | None = None,
    data_path: Path | None = None,
    out: Path | None = None,
    users: int = 200,
    test_days: int = 1,
    k: int = 12,
    seed: int = 0,
    session_weights: tuple[float, ...] = (),
    session_periods: int = 1,
    show_progress: bool = True,
) -> dict:
    """Run what the arguments allow: session response with a bundle, fold-in vs training with a log, and
    with ``session_weights`` a log, the session-weight study."""
    if artifacts is None and data_path is None:
        raise ValueError("give --artifacts (session response) and/or --data (fold-in against training)")
    report: dict = {}
    if artifacts is not None:
        from engine.artifacts.bundle import load_bundle
        from engine.artifacts.registry import ArtifactRegistry

        registry = ArtifactRegistry(artifacts)
        version = registry.current()
        if version is None:
            raise ValueError(f"{artifacts} has no promoted bundle; run `vitrine promote VERSION` first")
        personaliser = Personaliser(load_bundle(registry.path(version)))
        report["bundle"] = version
        report["session_response"] = session_response(personaliser, users=users, seed=seed, show_progress=show_progress)
    if data_path is not None:
        events = read_store(data_path).events  # read once: both studies cut their own periods from it
        report["data"] = str(data_path)
        report["fold_in"] = fold_in_against_training(events, test_days=test_days, k=k, seed=seed)
        if session_weights:
            try:
                report["session_weight"] = session_weight_study(
                    events, weights=session_weights, test_days=test_days, periods=session_periods, k=k, seed=seed
                )
            except ValueError as err:  # too short or too sparse a log for it: keep the fold-in figures
                report["session_weight"] = {"skipped": str(err)}
    if out is not None:
        write_json(out, report)
        logger.info("session evaluation written to %s", out)
    return report
