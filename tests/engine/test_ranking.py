"""Ranking metrics with hand-computed answers, and the baseline recommenders on a tiny log."""

import numpy as np
import pandas as pd
import pytest

from engine.recommend.baselines import build_interactions
from engine.recommend.ranking import build_task, paired_ratio_ci, per_user_metrics, ranking_metrics
from features.weighting import WeightingConfig
from tests.engine.recommend_contract import tiny_log


def test_metrics_match_hand_computed_values():
    top = np.array([[1, 2, 3], [4, 5, 6]])
    relevant = [np.array([2, 9]), np.array([7])]
    m = ranking_metrics(top, relevant, n_items=10)
    # user 0: hit at rank 2 of 2 relevant; user 1: no hit
    assert m["recall@3"] == pytest.approx((1 / 2 + 0) / 2)
    idcg = 1 + 1 / np.log2(3)
    assert m["ndcg@3"] == pytest.approx(((1 / np.log2(3)) / idcg + 0) / 2)
    assert m["map@3"] == pytest.approx(((1 / 2) / 2 + 0) / 2)  # P@2 = 1/2, divided by min(|rel|, K) = 2
    assert m["coverage"] == pytest.approx(0.6)


def test_perfect_ranking_scores_one():
    m = ranking_metrics(np.array([[3, 1, 0]]), [np.array([1, 3])], n_items=4)
    assert m["recall@3"] == m["ndcg@3"] == m["map@3"] == pytest.approx(1.0)


def test_per_user_metrics_are_what_the_means_are_made_of():
    top = np.array([[1, 2, 3], [4, 5, 6]])
    relevant = [np.array([2, 9]), np.array([4])]
    per_user = per_user_metrics(top, relevant)
    np.testing.assert_allclose(per_user["ap"], [(1 / 2) / 2, 1.0])
    assert ranking_metrics(top, relevant, n_items=10)["map@3"] == pytest.approx(per_user["ap"].mean())


def test_paired_ratio_interval_is_exact_for_a_constant_ratio_and_narrows_with_more_users():
    rng = np.random.default_rng(0)
    b = rng.random(500)
    assert paired_ratio_ci(1.1 * b, b, seed=0) == pytest.approx([1.1, 1.1])
    widths = []
    for n in (100, 10_000):
        b = rng.random(n)
        a = b * 1.1 + rng.normal(0, 0.2, n)  # a noisy 10% gain per user
        low, high = paired_ratio_ci(a, b, seed=0)
        assert low < a.mean() / b.mean() < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 5  # about 1/sqrt(100) as wide


def test_task_marks_unseen_users_and_items():
    data = build_interactions(tiny_log(), WeightingConfig())
    test = pd.DataFrame(
        {
            "user_id": ["a", "new"],
            "item_id": ["z", "w"],
            "event_type": ["purchase", "purchase"],
            "timestamp": pd.to_datetime(["2026-01-04", "2026-01-04"], utc=True),
            "session_id": "s",
        }
    )
    task = build_task(test, data.users.index_, data.items.index_)
    assert list(task.warm) == [True, False]
    assert task.relevant[1].tolist() == [-1]
