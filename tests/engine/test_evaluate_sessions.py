"""Session evaluation: the next set follows viewed items; fold-in is measured against training."""

from functools import partial

import numpy as np
import pandas as pd
import pytest

from engine.artifacts.bundle import load_bundle
from engine.evaluation.sessions import fold_in_against_training, render, session_response
from engine.serving.personaliser import Personaliser
from features.readers import read_store


@pytest.fixture(scope="module")
def personaliser(trained_artifacts):
    root, version = trained_artifacts
    return Personaliser(load_bundle(root / version))


def test_anonymous_sets_move_towards_the_viewed_class_and_colour(personaliser):
    # The tiny bundle follows a session weakly (about 0.02 -> 0.08 of the images); 40 shoppers x 4 images
    # keep that difference far above sampling noise (6 shoppers did not: one run in a few saw no change).
    report = session_response(personaliser, users=40, views=3, n=4, show_progress=False)
    anon = report["anonymous"]
    assert anon["shoppers"] == 40 and report["known"]["shoppers"] == 40
    for group in ("known", "anonymous"):
        for when in ("before", "after"):
            assert set(report[group][when]) == {"requested", "judged"}
            assert all(0.0 <= v <= 1.0 for v in report[group][when].values())
    # Before the session an anonymous shopper sees popular conditions, blind to the target; after three
    # views of one class and colour the set must ask for that combination more often.
    assert anon["after"]["requested"] > anon["before"]["requested"]
    assert anon["after"]["requested"] > anon["catalogue_share"]
    assert "session response" in render({"session_response": report})


def test_a_catalogue_without_enough_items_per_combination_is_refused(personaliser):
    with pytest.raises(ValueError, match="no \\(class, colour\\) has"):
        session_response(personaliser, users=2, views=10_000, show_progress=False)


def test_fold_in_against_training_reports_both_figures_on_the_same_shoppers(demo_store):
    report = fold_in_against_training(read_store(demo_store).events, test_days=3, k=10, share=0.5, seed=0)
    assert report["shoppers"] == max(1, int(report["warm_test_shoppers"] * 0.5))
    for name in ("trained_in", "folded_in"):
        assert report[name]["users"] == report["shoppers"]
        assert 0.0 <= report[name]["map@10"] <= 1.0
    assert report["map_ratio"] == pytest.approx(report["folded_in"]["map@10"] / report["trained_in"]["map@10"])
    # Folding a shopper's history in recovers a useful vector: far above chance on this catalogue.
    assert report["folded_in"]["recall@10"] > 10 * 10 / 320
    assert np.isfinite(report["fold_in_ms_p99"])
    assert "fold-in keeps" in render({"fold_in": report})


def test_share_outside_the_unit_interval_is_refused(demo_store):
    with pytest.raises(ValueError, match="share"):
        fold_in_against_training(read_store(demo_store).events, share=1.0)


def test_with_session_sums_repeats_and_weights_only_the_session():
    from engine.serving.sessions import with_session

    rows, strengths = with_session(
        np.array([3, 1]), np.array([1.0, 2.0]), np.array([1, 5, 5]), np.array([0.5, 1.0, 1.0]), session_weight=4
    )
    assert rows.tolist() == [1, 3, 5]
    assert strengths.tolist() == pytest.approx([2.0 + 4 * 0.5, 1.0, 4 * 2.0])


def _drifting_log(shoppers: int = 150, seed: int = 0):
    """Two item clusters; each shopper bought in one for a week, switches in a one-day session, then buys
    in the new one: the session, not the history, says what comes next."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp("2026-02-01", tz="UTC")
    cluster = {0: [f"a{i}" for i in range(5)], 1: [f"b{i}" for i in range(5)]}
    rows = []
    for u in range(shoppers):
        old = int(rng.integers(2))
        new = old if u % 4 == 0 else 1 - old  # a quarter keep their taste: both clusters are learned
        for d in range(7):
            rows += [(f"U{u}", rng.choice(cluster[old]), "purchase", t0 + pd.Timedelta(days=d)) for _ in range(2)]
        rows += [(f"U{u}", rng.choice(cluster[new]), "view", t0 + pd.Timedelta(days=7)) for _ in range(3)]
        for d in (8, 9):  # the target day, then the test day (left out)
            rows += [(f"U{u}", rng.choice(cluster[new]), "purchase", t0 + pd.Timedelta(days=d)) for _ in range(2)]
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp"])
    return df.assign(session_id=df["user_id"] + ":" + df["timestamp"].dt.strftime("%d"))


def test_session_weight_study_finds_that_a_telling_session_should_count_more():
    from engine.evaluation.sessions import session_weight_study
    from models.embeddings import EmbeddingConfig

    report = session_weight_study(
        _drifting_log(), weights=(0, 1, 20), k=5, config=EmbeddingConfig(factors=8, iterations=10)
    )
    (period,) = report["periods"]
    assert period["session_day"].startswith("2026-02-08") and period["target_from"].startswith("2026-02-09")
    assert report["shoppers"] == period["shoppers"] == 150
    maps = {w: m["map@5"] for w, m in report["by_weight"].items()}
    assert maps["20"] > maps["1"] + 0.02 and maps["20"] > maps["0"] + 0.02
    assert "session x20" in render({"session_weight": report})


def test_session_weight_study_pools_the_shoppers_of_several_periods(demo_store):
    from engine.evaluation.sessions import session_weight_study
    from models.embeddings import EmbeddingConfig

    events = read_store(demo_store).events
    config = EmbeddingConfig(factors=8, iterations=5)
    study = partial(session_weight_study, events, weights=(0, 1), test_days=3, k=5, config=config)
    one, two = study(periods=1), study(periods=2)
    assert two["periods"][0] == one["periods"][0]  # the latest period first, the same in both
    later, earlier = (pd.Timestamp(p["target_from"]) for p in two["periods"])
    assert earlier == later - pd.Timedelta(days=3)
    assert two["shoppers"] == sum(p["shoppers"] for p in two["periods"]) > one["shoppers"] > 0
    # pooled means are the shopper-weighted means of each period's own study; the earlier period alone is
    # the latest period of the log cut where the later period's target ends
    cut = events[events["timestamp"] < later + pd.Timedelta(days=3)]
    second_alone = study.func(cut, **{**study.keywords, "periods": 1})
    assert second_alone["periods"][0] == two["periods"][1]
    n1, n2 = one["shoppers"], second_alone["shoppers"]
    assert n1 + n2 == two["shoppers"]
    for w in ("0", "1"):
        expected = (n1 * one["by_weight"][w]["map@5"] + n2 * second_alone["by_weight"][w]["map@5"]) / (n1 + n2)
        assert two["by_weight"][w]["map@5"] == pytest.approx(expected)


def test_a_log_too_short_for_the_session_study_keeps_the_fold_in_figures(demo_store):
    from engine.evaluation.sessions import evaluate_sessions

    report = evaluate_sessions(
        data_path=demo_store, test_days=3, session_weights=(0, 1), session_periods=50, show_progress=False
    )
    assert report["fold_in"]["shoppers"] > 0
    assert "too short for 50 validation periods" in report["session_weight"]["skipped"]
    assert "session weight study skipped: " in render(report)
