import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.matrix import interaction_matrix
from features.split import time_split
from features.vocab import IdVocabulary
from features.weighting import EventWeighter, WeightingConfig


def _events(rows):
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp"])
    df["session_id"] = "S"
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)
    return df


def test_weights_follow_type_and_halve_every_half_life():
    ev = _events(
        [
            ("u", "a", "purchase", "2026-01-15"),
            ("u", "a", "view", "2026-01-15"),
            ("u", "b", "add_to_cart", "2026-01-08"),
        ]
    )
    w = (
        EventWeighter(WeightingConfig(type_weights={"view": 1, "add_to_cart": 4, "purchase": 10}, half_life_days=7))
        .fit(ev)
        .transform(ev)
    )
    np.testing.assert_allclose(w, [10.0, 1.0, 2.0])


def test_old_events_on_a_long_log_keep_a_tiny_weight_instead_of_rounding_to_zero():
    # two years at a 3-day half-life is 2^-243: float32 would round it to exactly 0
    ev = _events([("u", "a", "view", "2024-01-15"), ("u", "b", "view", "2026-01-15")])
    w = EventWeighter(WeightingConfig(half_life_days=3)).fit(ev).transform(ev)
    assert 0 < w[0] <= 1e-12 * w[1] * 1.0001
    assert (w[0] ** 2) > 0  # item-kNN's norms square it
    m = interaction_matrix(ev, w, IdVocabulary().fit(ev["user_id"]), IdVocabulary().fit(ev["item_id"]))
    assert m.nnz == 2 and (m.data > 0).all()


def test_unknown_event_type_is_a_clear_error():
    ev = _events([("u", "a", "wishlist", "2026-01-15")])
    with pytest.raises(ValueError, match="wishlist"):
        EventWeighter().fit(ev).transform(ev)


def test_matrix_sums_weights_per_user_item_and_drops_unknown_ids():
    ev = _events(
        [
            ("u1", "a", "view", "2026-01-01"),
            ("u1", "a", "view", "2026-01-01"),
            ("u2", "b", "view", "2026-01-01"),
            ("u3", "a", "view", "2026-01-01"),
        ]
    )
    users = IdVocabulary().fit(["u1", "u2"])
    items = IdVocabulary().fit(["a", "b"])
    m = interaction_matrix(ev, np.array([1.0, 2.0, 5.0, 7.0], dtype=np.float32), users, items)
    assert m.shape == (2, 2)
    np.testing.assert_array_equal(m.toarray(), [[3.0, 0.0], [0.0, 5.0]])


def test_vocabulary_keeps_first_seen_order_and_unknown_is_minus_one():
    v = IdVocabulary().fit(["x", "y", "x", "z"])
    assert list(v.ids_) == ["x", "y", "z"]
    np.testing.assert_array_equal(v.transform(["z", "nope", "x"]), [2, -1, 0])


def test_split_holds_out_the_last_calendar_days_for_date_only_logs():
    ev = _events([("u", "a", "purchase", f"2020-09-{d}") for d in range(16, 23)])
    split = time_split(ev, test_days=1)
    assert split.cutoff == pd.Timestamp("2020-09-22", tz="UTC")
    assert len(split.test) == 1 and len(split.train) == 6


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=60 * 24 * 30), min_size=2, max_size=40),
    st.integers(min_value=1, max_value=5),
)
def test_split_is_a_partition_in_time(minutes, days):
    ev = _events([("u", "a", "view", pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(minutes=m)) for m in minutes])
    try:
        split = time_split(ev, test_days=days)
    except ValueError:
        return  # every event fell on one side: the split refuses, as documented
    assert len(split.train) + len(split.test) == len(ev)
    assert split.train["timestamp"].max() < split.cutoff <= split.test["timestamp"].min()
