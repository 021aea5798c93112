"""The re-ranker saved as a bundle component ranks exactly as the fitted one; sessions become features."""

import json

import numpy as np
import pandas as pd
import pytest

from engine.recommend.baselines import build_interactions
from engine.recommend.ranker_files import load_ranker, save_ranker
from engine.recommend.reranker import RerankerConfig, RerankRecommender
from features.weighting import WeightingConfig
from tests.engine.test_reranker import family_log


@pytest.fixture(scope="module")
def fitted():
    df, groups = family_log(users=150)
    data = build_interactions(df, WeightingConfig())
    catalogue = groups.to_frame("group").assign(**{"class": "top", "colour": "red", "price": 10.0})
    config = RerankerConfig(label_windows=3, als_candidates=5, knn_candidates=5, bag=2, max_iter=30)
    return data, RerankRecommender(config, catalogue=catalogue).fit(data)


def test_a_saved_ranker_loads_and_ranks_exactly_as_the_fitted_one(fitted, tmp_path):
    data, rec = fitted
    assert rec.model_ is not None  # a learned model, not the blend: the boosters must survive the trip
    save_ranker(rec, tmp_path / "ranker")
    loaded = load_ranker(tmp_path / "ranker")
    rows = np.concatenate([np.arange(len(data.users)), [-1]])
    np.testing.assert_array_equal(loaded.recommend(rows, 12), rec.recommend(rows, 12))
    h = rec.sources_.histories(np.arange(20))
    for (items_a, score_a), (items_b, score_b) in zip(
        rec.ranked(h), loaded.ranked(loaded.sources_.histories(np.arange(20))), strict=True
    ):
        np.testing.assert_array_equal(items_a, items_b)
        np.testing.assert_allclose(score_a, score_b, rtol=1e-6)
    assert loaded.training_ == rec.training_


def test_a_ranker_folder_from_other_code_is_refused(fitted, tmp_path):
    _, rec = fitted
    save_ranker(rec, tmp_path / "ranker")
    meta_path = tmp_path / "ranker" / "ranker.json"
    meta = json.loads(meta_path.read_text())
    meta["features"] = meta["features"][:-1]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="other features"):
        load_ranker(tmp_path / "ranker")
    with pytest.raises(ValueError, match=r"no ranker\.json"):
        load_ranker(tmp_path)


def test_a_session_without_new_events_ranks_as_the_stored_history(fitted):
    _, rec = fitted
    src = rec.sources_
    rows = np.arange(10)
    empty = [(np.empty(0, np.int64), np.empty(0), np.empty(0, bool))] * len(rows)
    stored = rec.ranked(src.histories(rows))
    # a known shopper's empty session: the same candidates in the same order (the ALS vector is folded in
    # again from the same history, so scores move only by that fold-in's rounding)
    for (a, _), (b, _) in zip(stored, rec.ranked(src.session_histories(rows, empty)), strict=True):
        assert set(a) == set(b)


def test_a_new_shoppers_session_makes_its_items_and_their_family_candidates(fitted):
    data, rec = fitted
    src = rec.sources_
    item = "P3-c0"
    row = data.items.transform(pd.Series([item]))[0]
    session = [(np.array([row]), np.array([1.0]), np.array([False]))]
    ((items, _),) = rec.ranked(src.session_histories(np.array([-1]), session))
    names = set(data.items.ids_[items])
    assert item in names
    # the family source puts the item's other colours among the candidates of a shopper it has never seen
    assert {f"P3-c{c}" for c in range(1, 8)} <= names
    with pytest.raises(ValueError, match="no candidates"):
        src.session_histories(np.array([-1]), [(np.empty(0, np.int64), np.empty(0), np.empty(0, bool))])
