"""The recommender evaluation's validation periods: cut from before the test period, never touching it."""

import pandas as pd
import pytest

from engine.evaluation.recommenders import ServedRanker, evaluate_recommenders, render
from engine.recommend.baselines import ItemKNNRecommender, PopularityRecommender, RepurchaseRecommender
from engine.recommend.reranker import RerankerConfig, RerankRecommender
from features.split import validation_splits


def daily_log(days: int) -> pd.DataFrame:
    t0 = pd.Timestamp("2026-03-01", tz="UTC")
    rows = [
        (f"U{u}", f"I{(u + d) % 7}", "purchase", t0 + pd.Timedelta(days=d, hours=u))
        for d in range(days)
        for u in range(4)
    ]
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp"])
    return df.assign(session_id=df["user_id"])


def test_validation_periods_step_back_from_the_test_period_without_touching_it():
    events = daily_log(7)
    splits = validation_splits(events, test_days=2, periods=2)
    test_start = pd.Timestamp("2026-03-06", tz="UTC")  # the last two days are the test period
    assert [s.cutoff for s in splits] == [pd.Timestamp("2026-03-04", tz="UTC"), pd.Timestamp("2026-03-02", tz="UTC")]
    ends = [test_start, *(s.cutoff for s in splits[:-1])]  # each period ends where the later one begins
    for end, split in zip(ends, splits, strict=True):
        assert split.test["timestamp"].max() < end
        assert split.train["timestamp"].max() < split.cutoff <= split.test["timestamp"].min()
        assert (split.test["timestamp"] - split.cutoff).max() < pd.Timedelta(days=2)


def test_too_many_validation_periods_say_what_is_short():
    with pytest.raises(ValueError, match="too short for 3 validation periods"):
        validation_splits(daily_log(7), test_days=2, periods=3)


def test_validation_report_scores_each_period_and_never_the_test_period(demo_store):
    def suite(catalogue, weighting, test_days, seed):
        recent = PopularityRecommender(window_days=1)
        return [
            RepurchaseRecommender(recent),
            ItemKNNRecommender("bm25", recent),
            ServedRanker(
                RerankerConfig(label_days=test_days, label_windows=2, bag=1, max_iter=20),
                catalogue=catalogue,
                weighting=weighting,
                seed=seed,
            ),
        ]

    report = evaluate_recommenders(demo_store, test_days=3, k=5, validation_periods=2, suite=suite, show_progress=False)
    last = pd.read_csv(demo_store / "events.csv", usecols=["timestamp"])["timestamp"].max()
    test_start = pd.Timestamp(last).floor("D") - pd.Timedelta(days=2)
    cutoffs = [pd.Timestamp(p["split"]["cutoff"]) for p in report["validation"]]
    assert cutoffs == [test_start - pd.Timedelta(days=3), test_start - pd.Timedelta(days=6)]
    gains = [p["vitrine_vs_best_warm_baseline"]["relative_gain"] for p in report["validation"]]
    assert report["mean_relative_gain"] == pytest.approx(sum(gains) / 2)
    for period in report["validation"]:
        names = {"repurchase + popularity (last 1 days)", "item-kNN (bm25)", RerankRecommender.name}
        assert set(period["results"]) == names
        assert period["warm_users"] > 0
        gain = period["vitrine_vs_best_warm_baseline"]
        low, high = gain["relative_gain_ci95"]
        assert low <= gain["relative_gain"] <= high
        assert period["results"][RerankRecommender.name]["training"]["windows"] >= 1
    assert "the test period was not scored" in render(report)


def test_a_test_period_of_new_shoppers_only_has_no_warm_comparison_and_says_so():
    import warnings

    from engine.evaluation.recommenders import recommender_suite, score_split
    from features.split import time_split

    events = daily_log(6)
    t = events["timestamp"].max() + pd.Timedelta(days=1)
    new = pd.DataFrame({"user_id": ["N1", "N2"], "item_id": ["I1", "I2"], "event_type": "purchase", "timestamp": t})
    events = pd.concat([events, new.assign(session_id=new["user_id"])], ignore_index=True)
    catalogue = pd.DataFrame({"item_id": [f"I{i}" for i in range(7)]})
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no "mean of empty slice" on the way
        report = score_split(
            time_split(events, test_days=1),
            catalogue,
            suite=recommender_suite,
            k=3,
            seed=0,
            half_life_days=21.0,
            test_days=1,
            show_progress=False,
        )
    assert report["warm_users"] == 0 and report["test_users"] == 2
    assert report["vitrine_vs_best_warm_baseline"]["relative_gain"] is None
    for result in report["results"].values():
        assert result["warm"]["users"] == 0 and result["all"]["users"] == 2
    text = render({"data": "tiny", "k": 3, **report})
    assert "no test shopper was seen in training" in text
