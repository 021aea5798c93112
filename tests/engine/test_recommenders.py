"""Every recommender against the contract in :mod:`tests.engine.recommend_contract`, plus what each one knows."""

import numpy as np

from engine.recommend.baselines import (
    FactorRecommender,
    ItemKNNRecommender,
    PopularityRecommender,
    RepurchaseRecommender,
    build_interactions,
)
from engine.recommend.reranker import RerankerConfig, RerankRecommender
from features.weighting import WeightingConfig
from models.embeddings import EmbeddingConfig
from tests.engine.recommend_contract import (
    PersonalisedContract,
    RecommenderContract,
    checkerboard_log,
    tiny_log,
)

# the board has rank 2: two factors recover it exactly, more overfit its 19 purchases per shopper
SMALL_ALS = EmbeddingConfig(factors=2, iterations=15, threads=1)


def recent() -> PopularityRecommender:
    return PopularityRecommender(window_days=1)


class TestPopularity(RecommenderContract):
    def make(self):
        return PopularityRecommender()

    def test_everyone_gets_the_best_sellers(self, fitted, board):
        top = fitted.recommend(self.shoppers(board), 10)
        assert (top == top[0]).all()

    def test_best_sellers_count_purchases_and_a_window_counts_only_its_last_days(self):
        data = build_interactions(tiny_log(), WeightingConfig())
        items = list(data.items.ids_)
        assert [items[i] for i in PopularityRecommender().fit(data).recommend(np.array([0]), 3)[0]] == ["x", "z", "y"]
        last_day = PopularityRecommender(window_days=1).fit(data)
        assert items[last_day.recommend(np.array([0]), 1)[0][0]] == "z"


class TestRepurchase(RecommenderContract):
    def make(self):
        return RepurchaseRecommender(recent())

    def test_a_shoppers_own_items_come_first_most_recent_first(self, fitted, board):
        own = len(board.items) // 2 - 1  # every shopper bought all of their half of the board but one item
        warm = np.arange(len(board.users))
        top = fitted.recommend(warm, own)
        log = checkerboard_log()
        for u, row in zip(warm, top, strict=True):
            mine = log[log["user_id"] == board.users.ids_[u]].set_index("item_id")["timestamp"]
            assert set(board.items.ids_[row]) == set(mine.index)
            assert mine[board.items.ids_[row]].is_monotonic_decreasing

    def test_own_items_then_best_sellers_not_yet_bought(self):
        data = build_interactions(tiny_log(), WeightingConfig())
        items = list(data.items.ids_)
        rep = RepurchaseRecommender(PopularityRecommender()).fit(data)
        a = data.users.transform(["a"])
        assert [items[i] for i in rep.recommend(a, 3)[0]] == ["y", "x", "z"]
        assert [items[i] for i in rep.recommend(np.array([-1]), 2)[0]] == ["x", "z"]


class TestALS(PersonalisedContract):
    near_ties = True

    def make(self):
        return FactorRecommender(SMALL_ALS, recent(), seed=3)


class TestBPR(PersonalisedContract):
    def make(self):
        # one thread: implicit's lock-free BPR SGD reproduces a seed only on one
        config = EmbeddingConfig(algorithm="bpr", factors=4, iterations=50, learning_rate=0.05, threads=1)
        return FactorRecommender(config, recent(), seed=3)


class TestItemKNNCosine(PersonalisedContract):
    def make(self):
        return ItemKNNRecommender("cosine", recent())


class TestItemKNNBM25(PersonalisedContract):
    def make(self):
        return ItemKNNRecommender("bm25", recent())


class TestReranker(PersonalisedContract):
    """The learned ranker: the board's last days give it a few hundred labelled purchases."""

    def make(self):
        config = RerankerConfig(
            label_windows=3, min_positives=100, bag=1, max_iter=50, min_child_samples=5, embeddings=SMALL_ALS
        )
        return RerankRecommender(config, seed=3)

    def test_it_ranks_with_a_learned_model(self, fitted):
        assert fitted.model_ is not None and fitted.training_["ranker"] == "lightgbm"

    def test_unseen_shoppers_get_the_last_days_best_sellers(self, fitted, board):
        # ties broken by all-time sales under the re-ranker's own recency weighting (3-day half-life)
        own_weighting = build_interactions(checkerboard_log(), WeightingConfig(half_life_days=3.0))
        last_day = PopularityRecommender(window_days=1).fit(own_weighting).recommend(np.array([-1]), 5)
        np.testing.assert_array_equal(fitted.recommend(np.array([-1, -1]), 5), np.tile(last_day, (2, 1)))


class TestRerankerBlend(PersonalisedContract):
    """With too few labels the sources' blend ranks instead of a model."""

    def make(self):
        return RerankRecommender(RerankerConfig(min_positives=10**6, embeddings=SMALL_ALS), seed=3)

    def test_it_ranks_by_the_blend(self, fitted):
        assert fitted.model_ is None and fitted.training_["ranker"] == "blend (too few labels)"
