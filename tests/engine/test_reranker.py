"""The candidate + re-ranker recommender on a synthetic log with a known structure."""

import numpy as np
import pandas as pd

from engine.recommenders import build_interactions
from engine.reranker import RerankerConfig, RerankRecommender
from features.weighting import WeightingConfig


def family_log(days: int = 8, users: int = 120, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """Each shopper picks a product and buys one of its colours a day, in a random order, plus one noise item."""
    rng = np.random.default_rng(seed)
    products = [f"P{p}" for p in range(30)]
    items = {p: [f"{p}-c{c}" for c in range(days)] for p in products}
    rows = []
    for u in range(users):
        p = products[rng.integers(len(products))]
        for d, c in enumerate(rng.permutation(days)):
            rows.append((f"U{u}", items[p][c], "purchase", pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(days=d)))
        noise = rng.choice([i for its in items.values() for i in its])
        rows.append(
            (
                f"U{u}",
                noise,
                "purchase",
                pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(days=int(rng.integers(days))),
            )
        )
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp"])
    df["session_id"] = df["user_id"]
    groups = pd.Series({i: p for p, its in items.items() for i in its})
    return df, groups


def test_reranker_learns_that_shoppers_buy_the_other_colours_of_their_product():
    df, groups = family_log()
    test_day = df["timestamp"].max()
    train, test = df[df["timestamp"] < test_day], df[df["timestamp"] == test_day]
    data = build_interactions(train, WeightingConfig())
    rec = RerankRecommender(
        RerankerConfig(label_windows=3, als_candidates=5, knn_candidates=5), item_groups=groups
    ).fit(data)
    assert rec.model_ is not None and rec.train_positives_ > 0
    users = test["user_id"].unique()
    rows = data.users.transform(users)
    top = rec.recommend(rows, 5)
    hits = 0
    for u, items in zip(users, top, strict=True):
        bought = set(test.loc[test["user_id"] == u, "item_id"])
        hits += bool(bought & set(data.items.ids_[items[items >= 0]]))
    # the one colour a shopper has not bought yet is a sibling of everything they own; other shoppers
    # bought it, so it is known, but nothing but the product family singles it out
    assert hits / len(users) >= 0.8


def test_unseen_shoppers_get_recent_best_sellers():
    df, groups = family_log(days=4, users=30)
    data = build_interactions(df, WeightingConfig())
    rec = RerankRecommender(RerankerConfig(label_windows=1), item_groups=groups).fit(data)
    top = rec.recommend(np.array([-1, -1]), 3)
    assert (top[0] == top[1]).all() and (top[0] == rec.sources_.popular[:3]).all()
