"""The candidate + re-ranker recommender on a synthetic log with a known structure."""

import numpy as np
import pandas as pd
import pytest

from engine.recommend.baselines import build_interactions
from engine.recommend.reranker import RerankerConfig, RerankRecommender
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
        RerankerConfig(label_windows=3, als_candidates=5, knn_candidates=5), catalogue=groups.to_frame("group")
    ).fit(data)
    assert rec.model_ is not None and rec.training_["positives"] >= rec.config.min_positives
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


def _attribute_log():
    """Two shoppers and a six-item catalogue in two classes; every item bought once by someone else too."""
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    rows = [
        ("A", "d1", 0),
        ("A", "d2", 1),
        ("A", "s1", 2),  # A: two dresses, one shoe
        ("B", "s1", 0),
        ("B", "s2", 1),  # B: shoes only
        ("C", "d3", 0),
        ("C", "d3", 1),
        ("C", "d3", 2),
        ("C", "s3", 2),  # d3 sells best among dresses
    ]
    df = pd.DataFrame(
        [(u, i, "purchase", t0 + pd.Timedelta(days=d)) for u, i, d in rows],
        columns=["user_id", "item_id", "event_type", "timestamp"],
    )
    df["session_id"] = df["user_id"]
    attrs = pd.DataFrame(
        {
            "class": ["dress", "dress", "dress", "shoe", "shoe", "shoe"],
            "colour": ["red", "blue", "red", "black", "black", "white"],
            "price": [10.0, 20.0, 40.0, 30.0, 30.0, 30.0],
        },
        index=pd.Index(["d1", "d2", "d3", "s1", "s2", "s3"], name="item_id"),
    )
    return df, attrs


def test_attribute_features_and_class_best_sellers():
    from engine.recommend.candidates import FEATURES, CandidateSources

    df, attrs = _attribute_log()
    data = build_interactions(df, WeightingConfig(half_life_days=None))
    config = RerankerConfig(knn_candidates=0, family_candidates=0, popular_candidates=0, als_candidates=0)
    src = CandidateSources(data, None, attrs.reindex(data.items.ids_), config, seed=0)
    a = data.users.transform(["A"])
    _, pi, x = src.candidates(a)
    items = list(data.items.ids_[pi])
    # own items plus the best-selling dress (d3) and shoes of A's two classes: class_candidates=10 takes all
    assert set(items) == {"d1", "d2", "d3", "s1", "s2", "s3"}
    feat = dict(zip(items, x, strict=True))
    share = FEATURES.index("class_share")
    assert feat["d3"][share] == pytest.approx(2 / 3) and feat["s3"][share] == pytest.approx(1 / 3)
    colour = FEATURES.index("colour_share")
    assert feat["d3"][colour] == pytest.approx(1 / 3)  # one of A's three items is red
    # A's mean log price is log of the geometric mean of 10, 20 and 30
    gap = FEATURES.index("price_gap")
    assert feat["d3"][gap] == pytest.approx(np.log(40.0) - np.log(10.0 * 20.0 * 30.0) / 3, rel=1e-5)
    rank = FEATURES.index("class_sales_rank")
    assert feat["d3"][rank] == 1.0  # the best-selling dress


def test_without_attributes_the_attribute_features_are_missing_not_wrong():
    from engine.recommend.candidates import FEATURES, CandidateSources

    df, _ = _attribute_log()
    data = build_interactions(df, WeightingConfig())
    src = CandidateSources(data, None, None, RerankerConfig(als_candidates=0), seed=0)
    _, _, x = src.candidates(data.users.transform(["A", "B"]))
    for name in ("class_share", "colour_share", "price_gap", "class_sales_rank"):
        col = x[:, FEATURES.index(name)]
        assert np.isnan(col).all(), name


def test_sale_features_come_from_the_prices_paid():
    from engine.recommend.candidates import FEATURES, CandidateSources

    df, attrs = _attribute_log()
    # d3 sold at 40 on days 0 and 1, then at 20 on day 2 (the log's last day): on sale at half price
    paid = {"d1": 10.0, "d2": 20.0, "s1": 30.0, "s2": 30.0, "s3": 30.0}
    df["price"] = [paid.get(i, 40.0) for i in df["item_id"]]
    df.loc[(df["item_id"] == "d3") & (df["timestamp"] == df["timestamp"].max()), "price"] = 20.0
    data = build_interactions(df, WeightingConfig(half_life_days=None))
    config = RerankerConfig(knn_candidates=0, family_candidates=0, popular_candidates=0, als_candidates=0)
    listed = attrs.assign(price=99.0)  # a catalogue price that the log's own prices paid must override
    src = CandidateSources(data, None, listed.reindex(data.items.ids_), config, seed=0)
    _, pi, x = src.candidates(data.users.transform(["A"]))
    feat = dict(zip(data.items.ids_[pi], x, strict=True))
    price = FEATURES.index("log_price")
    assert feat["d3"][price] == pytest.approx(np.log(40.0))  # median of 40, 40 and 20
    assert feat["d1"][price] == pytest.approx(np.log(10.0))
    last, low = FEATURES.index("discount_1d"), FEATURES.index("discount_min")
    assert feat["d3"][last] == pytest.approx(0.5) and feat["d3"][low] == pytest.approx(0.5)
    assert feat["d1"][low] == pytest.approx(1.0)  # one price only: never discounted
    assert np.isnan(feat["d1"][last])  # not sold on the last day: no last-day price

    # a log without prices leaves the sale features unknown rather than wrong
    src = CandidateSources(build_interactions(df.drop(columns="price"), WeightingConfig()), None, None, config, seed=0)
    _, _, x = src.candidates(data.users.transform(["A"]))
    assert np.isnan(x[:, [last, low]]).all()


def _channel_log() -> pd.DataFrame:
    """Online orders are often bought again the next day (another size); store purchases never are."""
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    rows = []
    for u in range(150):
        rows.append((f"on{u}", "x", "online", 0))
        if u % 2 == 0:
            rows.append((f"on{u}", "x", "online", 1))
        rows.append((f"st{u}", "y", "store", 0))
    # Z: x online and y in store on day 1 in one basket; w alone on day 2 (the log's last day)
    rows += [("Z", "x", "online", 1), ("Z", "y", "store", 1), ("Z", "w", "store", 2), ("V", "w", "store", 2)]
    rows.append(("V", "v", "online", 2))
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "channel", "day"])
    df["timestamp"] = t0 + pd.to_timedelta(df.pop("day"), unit="D")
    df["event_type"] = "purchase"
    df["session_id"] = df["user_id"] + ":" + df["timestamp"].dt.strftime("%d")
    return df


def test_own_item_context_and_basket_features():
    from engine.recommend.candidates import FEATURES, CandidateSources

    df = _channel_log()
    data = build_interactions(df, WeightingConfig(half_life_days=None))
    config = RerankerConfig(knn_candidates=0, family_candidates=0, popular_candidates=10, als_candidates=0)
    src = CandidateSources(data, None, None, config, seed=0)
    _, pi, x = src.candidates(data.users.transform(["Z"]))
    feat = dict(zip(data.items.ids_[pi], x, strict=True))
    rebuy, session = FEATURES.index("own_channel_rebuy"), FEATURES.index("own_session_items")
    # online purchases before the last day: 150 on day 0 (75 bought again on day 1) and 75 + Z's on day 1
    assert feat["x"][rebuy] == pytest.approx(75 / 226)
    assert feat["y"][rebuy] == 0.0  # a measured rate of zero, kept apart from unknown
    assert np.isnan(feat["v"][rebuy])  # not Z's own item
    assert feat["x"][session] == feat["y"][session] == 2 and feat["w"][session] == 1
    # v shares a basket with w (Z's item, V's basket); x and y share none with it
    basket = FEATURES.index("basket_rel")
    assert feat["v"][basket] > 0

    # without a channel column the re-buy rate is unknown; the session sizes stay
    no_channel = build_interactions(df.drop(columns="channel"), WeightingConfig())
    src = CandidateSources(no_channel, None, None, config, seed=0)
    _, pi, x = src.candidates(data.users.transform(["Z"]))
    assert np.isnan(x[:, rebuy]).all() and (x[:, session] > 0).any()


def test_session_cooccurrence_links_basket_items_and_skips_sprees():
    from engine.recommend.rows import session_cooccurrence

    ev = pd.DataFrame(
        {
            "session_id": ["s1", "s1", "s2", "s2", "s3", "s3", "s3"],
            "item_row": [0, 1, 0, 1, 2, 3, 4],
        }
    )
    co = session_cooccurrence(ev, 5, max_items=2).toarray()
    assert co[0, 1] == co[1, 0] == pytest.approx(1.0)  # always bought together
    assert co[0, 0] == 0  # an item is not its own neighbour
    assert not co[2:, 2:].any()  # s3 has three items, over the cap: left out
    assert session_cooccurrence(ev, 5, max_items=3)[2, 3] > 0


def test_a_sparse_log_adds_older_windows_until_it_has_enough_labels():
    df, groups = family_log(days=20, users=30)  # about 30 labelled purchases a day
    data = build_interactions(df, WeightingConfig())
    small = dict(als_candidates=5, knn_candidates=5, bag=1, max_iter=10, min_child_samples=5)
    rec = RerankRecommender(
        RerankerConfig(label_windows=2, min_positives=100, **small), catalogue=groups.to_frame("group")
    ).fit(data)
    assert rec.training_["windows"] > 2 and rec.training_["positives"] >= 100
    assert rec.training_["ranker"] == "lightgbm"
    capped = RerankRecommender(
        RerankerConfig(label_windows=2, max_label_windows=3, min_positives=10_000, **small),
        catalogue=groups.to_frame("group"),
    ).fit(data)
    assert capped.training_["windows"] == 3 and capped.model_ is None
    assert capped.training_["ranker"] == "blend (too few labels)"


def test_without_enough_labels_the_ranking_is_the_sources_blend():
    df, groups = family_log(days=4, users=30)
    data = build_interactions(df, WeightingConfig())
    rec = RerankRecommender(RerankerConfig(min_positives=10_000), catalogue=groups.to_frame("group")).fit(data)
    assert rec.model_ is None
    rows = np.arange(10)
    pu, pi, x = rec.sources_.candidates(rows)
    blend = RerankRecommender._blend(x)
    top = rec.recommend(rows, 3)
    for u in range(10):
        mine = np.flatnonzero(pu == u)
        assert blend[mine][np.isin(pi[mine], top[u])].min() >= np.sort(blend[mine])[-3]

    class Constant:  # a model that learned nothing: its ties are broken by the blend, not by item order
        def predict(self, x):
            return np.zeros(len(x))

    rec.model_ = Constant()
    np.testing.assert_array_equal(rec.recommend(rows, 3), top)
