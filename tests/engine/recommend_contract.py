"""A contract every :class:`engine.recommend.baselines.Recommender` meets (``TestX(RecommenderContract)``).

``recommend(user_rows, k)`` gives a (B, k) array of distinct training item rows for any k up to the catalogue's
size, best first, so a shorter list is the head of a longer one. Shoppers unseen in training (row -1) share one
list; each shopper's list depends on nothing else in the batch; the same data and seed give the same lists.

The known-answer fixture is benfred/implicit's checkerboard (``tests/recommender_base_test.py``): shopper u has
bought every item of u's parity except item u, the held-out diagonal. A personalised recommender
(:class:`PersonalisedContract`) must rank the shopper's own half of the board first and, of the items the
shopper has not bought, item u first. Purchases are spread over ``DAYS`` days, so time-based recommenders (the
recency of repurchase, the re-ranker's label windows) have a history to work with.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from engine.recommend.baselines import Interactions, Recommender, build_interactions
from features.weighting import WeightingConfig

N = 40  # shoppers and items on the board
DAYS = 8


def checkerboard_log(n: int = N, days: int = DAYS) -> pd.DataFrame:
    """Shopper ``u{u}`` buys each item ``i{j}`` with j ≡ u (mod 2), j ≠ u, once, on day (u + j) mod ``days``."""
    t0 = pd.Timestamp("2026-03-01", tz="UTC")
    rows = [
        (f"u{u:02d}", f"i{j:02d}", "purchase", t0 + pd.Timedelta(days=(u + j) % days, hours=u % 24))
        for u in range(n)
        for j in range(u % 2, n, 2)
        if j != u
    ]
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp"])
    return df.assign(session_id=df["user_id"] + ":" + df["timestamp"].dt.strftime("%d"))


def tiny_log() -> pd.DataFrame:
    """Three shoppers, three items: x sells most (twice), then z (twice, both on the last day), then y."""
    rows = [
        ("a", "x", "purchase", "2026-01-01"),
        ("a", "y", "purchase", "2026-01-03"),
        ("b", "x", "purchase", "2026-01-02"),
        ("c", "x", "view", "2026-01-02"),
        ("b", "z", "purchase", "2026-01-03"),
        ("c", "z", "purchase", "2026-01-03"),
    ]
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp"])
    df["session_id"] = "s"
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)
    return df


def number(ids: np.ndarray) -> np.ndarray:
    """``u07`` / ``i07`` -> 7, element-wise: where an id sits on the board."""
    return np.array([int(s[1:]) for s in np.ravel(ids)], dtype=np.int64).reshape(np.shape(ids))


class RecommenderContract:
    # ALS scores every item of a shopper's own half of the board about 1, equal to the last bit or two of float32,
    # so their order within that half follows the rounding of the matrix product (BLAS kernels differ with the
    # batch's shape) and how top_k partitions exact ties. Where this is True, the checks of order across batches
    # and list lengths compare which items fill the own half (a wide margin above the rest), not their order.
    near_ties: bool = False

    def make(self) -> Recommender:
        """An unfitted recommender, seeded, small enough to fit in about a second."""
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def board(cls) -> Interactions:
        return build_interactions(checkerboard_log(), WeightingConfig())

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, board: Interactions) -> Recommender:
        return cls().make().fit(board)

    @staticmethod
    def shoppers(board: Interactions) -> np.ndarray:
        """Every warm row, with unseen shoppers (-1) among them."""
        rows = np.arange(len(board.users))
        return np.concatenate([[-1], rows[:5], [-1], rows[5:]])

    # ------------------------------------------------------------------------------------ shape and exclusion

    @pytest.mark.parametrize("k", [1, 7, N])
    def test_lists_hold_k_distinct_catalogue_items(self, fitted, board, k):
        users = self.shoppers(board)
        top = fitted.recommend(users, k)
        assert top.shape == (len(users), k)
        assert np.issubdtype(top.dtype, np.integer)
        assert ((top >= 0) & (top < board.n_items)).all()  # no padding while k <= the catalogue
        assert all(len(set(row.tolist())) == k for row in top), "an item is listed twice"

    def test_a_full_list_ranks_every_item_once(self, fitted, board):
        top = fitted.recommend(self.shoppers(board), board.n_items)
        np.testing.assert_array_equal(np.sort(top, axis=1), np.tile(np.arange(board.n_items), (len(top), 1)))

    def test_an_empty_batch_gives_no_lists(self, fitted):
        assert fitted.recommend(np.array([], dtype=np.int64), 5).shape == (0, 5)

    # ------------------------------------------------------------------------------------ ordering

    def assert_same_lists(self, a: np.ndarray, b: np.ndarray) -> None:
        if self.near_ties:
            a, b = np.sort(a, axis=1), np.sort(b, axis=1)
        np.testing.assert_array_equal(a, b)

    def test_a_shorter_list_is_the_head_of_a_longer_one(self, fitted, board):
        users = self.shoppers(board)
        full = fitted.recommend(users, board.n_items)
        half = board.n_items // 2
        for k in (half,) if self.near_ties else (1, 3, 10, half):
            self.assert_same_lists(fitted.recommend(users, k), full[:, :k])

    # ------------------------------------------------------------------------------------ unseen shoppers, batches

    def test_unseen_shoppers_share_one_list(self, fitted, board):
        top = fitted.recommend(np.array([-1, 3, -1, -1]), 10)
        assert (top[[0, 2, 3]] == top[0]).all()

    def test_each_shoppers_list_depends_on_nothing_else_in_the_batch(self, fitted, board):
        users, half = self.shoppers(board), board.n_items // 2
        batch = fitted.recommend(users, half)
        alone = np.concatenate([fitted.recommend(users[i : i + 1], half) for i in range(len(users))])
        self.assert_same_lists(batch, alone)
        self.assert_same_lists(fitted.recommend(users[::-1], half)[::-1], batch)

    # ------------------------------------------------------------------------------------ determinism

    def test_the_same_data_and_seed_give_the_same_lists(self, fitted, board):
        users = self.shoppers(board)
        again = self.make().fit(board)
        np.testing.assert_array_equal(again.recommend(users, board.n_items), fitted.recommend(users, board.n_items))


class PersonalisedContract(RecommenderContract):
    """A recommender that ranks by the shopper's own history (all but the non-personalised baselines)."""

    def test_a_shoppers_own_half_of_the_board_comes_first(self, fitted, board):
        warm = np.arange(len(board.users))
        top = fitted.recommend(warm, board.n_items // 2)  # (N, N/2): the bought items and the held-out one
        parity = number(board.users.ids_[warm]) % 2
        assert (number(board.items.ids_[top]) % 2 == parity[:, None]).all()

    def test_the_held_out_item_is_the_first_one_not_yet_bought(self, fitted, board):
        warm = np.arange(len(board.users))
        top = fitted.recommend(warm, board.n_items)
        bought = board.matrix.toarray() > 0
        first_new = [row[~bought[u, row]][0] for u, row in zip(warm, top, strict=True)]
        np.testing.assert_array_equal(number(board.items.ids_[first_new]), number(board.users.ids_[warm]))
