"""Vitrine's default recommender: several candidate sources, re-ranked by a learned model.

The sources and the features of each (shopper, candidate) pair are :mod:`engine.recommend.candidates`.
A bag of LightGBM models scores the pairs (a binary "bought" objective by default, lambdarank as an option).
They are trained without touching the evaluation period: the sources are fitted on the training log minus
its last ``label_days``, and the labels are the purchases in those days, for several such windows (a sparse
log adds older windows until it has enough labels; with too few even then, the sources' hand-made blend
ranks instead of a model that would fit noise). For prediction, the sources are refitted on the whole
training log. Shoppers unseen in training get the recent best sellers.

The sources weight events with their own recency half-life (``RerankerConfig.half_life_days``, 3 days):
chosen on validation days cut from the H&M training week (2020-09-20 and -21), never on the test day.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from engine.recommend.baselines import Interactions, build_interactions
from engine.recommend.candidates import FEATURES, CandidateSources, Histories
from features.split import prices_as_of
from features.weighting import WeightingConfig
from models.embeddings import EmbeddingConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RerankerConfig:
    label_days: int = 1  # length of one labelling window (the horizon being predicted)
    label_windows: int = 5  # consecutive windows at the end of the training log, each with its own sources
    # A learned ranker needs labels. On H&M validation days a ranker trained on about 240 purchases scored
    # below the sources' hand-made blend on one day, and on 570-740 it beat the blend on both. A sparse log
    # adds older windows until it has ``min_positives`` purchases among the candidates (at most
    # ``max_label_windows``); with fewer still, it ranks by the blend.
    min_positives: int = 500
    max_label_windows: int = 30
    knn_neighbours: int = 100
    knn_candidates: int = 40
    family_candidates: int = 20
    popular_candidates: int = 20
    als_candidates: int = 40
    class_candidates: int = 10  # best sellers of each of the shopper's top classes
    top_classes: int = 3
    max_train_users: int = 20_000
    half_life_days: float | None = 3.0  # the sources' recency weighting (None: keep the caller's)
    embeddings: EmbeddingConfig = field(default_factory=lambda: EmbeddingConfig(factors=64, iterations=15))
    model: str = "binary"  # LightGBM objective: "binary" (bought or not) or "lambdarank" (NDCG per shopper)
    bag: int = 5  # models on row/feature subsamples, averaged
    max_iter: int = 200
    learning_rate: float = 0.05
    num_leaves: int = 7  # small trees and large leaves: a week of logs gives a few thousand labelled shoppers
    min_child_samples: int = 200

    def __post_init__(self) -> None:
        if self.model not in ("lambdarank", "binary"):
            raise ValueError(f"model must be 'lambdarank' or 'binary'; got {self.model!r}")
        if self.bag < 1:
            raise ValueError(f"bag must be >= 1; got {self.bag}")
        if self.label_days < 1 or min(self.knn_candidates, self.family_candidates, self.popular_candidates) < 0:
            raise ValueError("label_days must be >= 1 and candidate counts >= 0")
        if not 1 <= self.label_windows <= self.max_label_windows or self.min_positives < 1:
            raise ValueError(
                f"need 1 <= label_windows <= max_label_windows and min_positives >= 1; got {self.label_windows}, "
                f"{self.max_label_windows}, {self.min_positives}"
            )


class Bag:
    """LightGBM boosters trained on different row and feature subsamples; their scores averaged."""

    def __init__(self, models: list) -> None:
        self.models = models  # lightgbm.Booster

    def predict(self, x: np.ndarray) -> np.ndarray:
        # one thread: serving asks for one shopper's candidates at a time, in workers that share the cores
        return np.mean([m.predict(x, num_threads=1) for m in self.models], axis=0)


class RerankRecommender:
    """Candidate sources + a learned re-ranker; see the module docstring."""

    name = "vitrine (candidates + re-ranker)"

    def __init__(
        self,
        config: RerankerConfig | None = None,
        *,
        catalogue: pd.DataFrame | None = None,
        weighting: WeightingConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.config = config or RerankerConfig()
        # indexed by item_id; any of group (product family, "" when unknown), class, colour, pattern and price
        self.catalogue = catalogue
        weighting = weighting or WeightingConfig()
        if self.config.half_life_days is not None:
            weighting = replace(weighting, half_life_days=self.config.half_life_days)
        self.weighting = weighting  # the caller's event-type weights, with the sources' own half-life
        self.seed = seed

    def _groups(self, data: Interactions) -> np.ndarray | None:
        if self.catalogue is None or "group" not in self.catalogue:
            return None
        g = self.catalogue["group"].reindex(data.items.ids_).fillna("").astype(str).to_numpy()
        return g if (g != "").any() else None

    def _attributes(self, data: Interactions) -> pd.DataFrame | None:
        if self.catalogue is None:
            return None
        return self.catalogue.reindex(data.items.ids_)

    def _sources(self, data: Interactions) -> CandidateSources:
        return CandidateSources(data, self._groups(data), self._attributes(data), self.config, self.seed)

    def _window(self, events: pd.DataFrame, cut: pd.Timestamp, end: pd.Timestamp, rng: np.random.Generator):
        """Labelled pairs of one window: sources fitted before ``cut``, purchases in [cut, end) as labels."""
        fit_ev = events[events["timestamp"] < cut]
        label_ev = events[(events["timestamp"] >= cut) & (events["timestamp"] < end)]
        label_ev = label_ev[label_ev["event_type"].astype(str) == "purchase"]
        if fit_ev.empty or label_ev.empty:
            return None
        fit_data = build_interactions(fit_ev, self.weighting)
        src = self._sources(fit_data)
        users = fit_data.users.transform(label_ev["user_id"].unique())
        users = users[users >= 0]
        if len(users) > self.config.max_train_users:
            users = rng.choice(users, self.config.max_train_users, replace=False)
        if len(users) == 0:
            return None
        pu, pi, x = src.candidates(users)
        bought = set(
            zip(
                fit_data.users.transform(label_ev["user_id"]),
                fit_data.items.transform(label_ev["item_id"]),
                strict=True,
            )
        )
        y = np.fromiter(((int(users[u]), int(i)) in bought for u, i in zip(pu, pi, strict=True)), bool, len(pu))
        return x, y, pu

    def fit(self, data: Interactions) -> RerankRecommender:
        c = self.config
        events = data.events.drop(columns=["user_row", "item_row", "weight"])
        rng = np.random.default_rng(self.seed)
        end = data.reference_time.floor("D") + pd.Timedelta(days=1)
        first = events["timestamp"].min()
        parts, positives, windows = [], 0, 0
        # the default windows, then older ones while the labels are too few to learn from
        while windows < c.label_windows or (positives < c.min_positives and windows < c.max_label_windows):
            window_end = end - pd.Timedelta(days=windows * c.label_days)
            cut = window_end - pd.Timedelta(days=c.label_days)
            if cut <= first:  # nothing left to fit sources on
                break
            windows += 1
            part = self._window(events, cut, window_end, rng)
            if part is not None:
                parts.append(part)
                positives += int(part[1].sum())
        pairs = sum(len(p[1]) for p in parts)
        self.model_ = None
        if positives >= c.min_positives and positives < pairs:
            self.model_ = self._train(parts)
            logger.info("re-ranker trained on %d pairs (%d positives) from %d windows", pairs, positives, windows)
        else:
            logger.warning(
                "re-ranker: %d purchases among the candidates of %d label windows (need %d); ranking by the "
                "sources' blend instead of a learned model",
                positives,
                windows,
                c.min_positives,
            )
        self.training_ = {
            "windows": windows,
            "pairs": pairs,
            "positives": positives,
            "ranker": "lightgbm" if self.model_ is not None else "blend (too few labels)",
        }
        # the same events under the sources' own weighting: same shoppers and items, so the same rows
        reweighted = build_interactions(events, self.weighting)
        if not (
            np.array_equal(reweighted.users.ids_, data.users.ids_)
            and np.array_equal(reweighted.items.ids_, data.items.ids_)
        ):
            raise RuntimeError("re-weighting the training events changed the user or item rows")
        self.sources_ = self._sources(reweighted)
        return self

    def _train(self, parts: list) -> Bag:
        import lightgbm

        # one query per (window, shopper); queries without a purchase teach a ranker nothing
        keep_x, keep_y, sizes = [], [], []
        for px, py, pu in parts:
            bounds = np.flatnonzero(np.diff(pu)) + 1
            for xs, ys in zip(np.split(px, bounds), np.split(py, bounds), strict=True):
                if ys.any():
                    keep_x.append(xs)
                    keep_y.append(ys)
                    sizes.append(len(ys))
        x, y = np.concatenate(keep_x), np.concatenate(keep_y).astype(int)
        c = self.config
        subsample = 0.8 if c.bag > 1 else 1.0
        models = []
        for b in range(c.bag):
            model = lightgbm.LGBMRanker(
                objective=c.model,
                n_estimators=c.max_iter,
                learning_rate=c.learning_rate,
                num_leaves=c.num_leaves,
                min_child_samples=c.min_child_samples,
                subsample=subsample,
                subsample_freq=1,
                colsample_bytree=subsample,
                random_state=self.seed + b,
                # one thread: 98 ms an iteration on 105k pairs against 762 ms on two, on a 2-core machine busy
                # with other jobs (OpenMP threads spin when the cores are taken); the bag's 5 models also
                # give the same trees whatever the machine's core count
                n_jobs=1,
                verbose=-1,
            )
            # the booster alone scores as the fitted model does, and is what the bundle stores
            models.append(model.fit(x, y, group=sizes).booster_)  # the binary objective ignores the groups
        return Bag(models)

    @staticmethod
    def _blend(x: np.ndarray) -> np.ndarray:
        """The sources' hand-made blend, ties broken by recent sales."""
        return x[:, FEATURES.index("blend")] + 1e-6 * x[:, FEATURES.index("pop_1d")]

    def _score(self, x: np.ndarray) -> np.ndarray:
        if self.model_ is not None:
            return self.model_.predict(x)
        return self._blend(x)  # too few labels to learn from (a short or sparse log)

    def ranked(self, histories: Histories) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per shopper of ``histories``: (candidate item rows, their scores), best first."""
        pu, pi, x = self.sources_.pairs(histories)
        score = self._score(x)
        order = np.lexsort((-self._blend(x), -score, pu))  # the model's ties (if it learned little) by the blend
        pu, pi, score = pu[order], pi[order], score[order]
        shoppers = np.arange(histories.strength.shape[0])
        starts, ends = np.searchsorted(pu, shoppers), np.searchsorted(pu, shoppers, side="right")
        return [(pi[s:e], score[s:e]) for s, e in zip(starts, ends, strict=True)]

    def top(self, items: np.ndarray, k: int) -> np.ndarray:
        """The first k of a shopper's ranked items, filled up with the recent best sellers they lack."""
        items = items[:k]
        if len(items) < k:
            popular = self.sources_.popular
            items = np.concatenate([items, popular[~np.isin(popular, items)][: k - len(items)]])
        return items

    def recommend(self, user_rows: np.ndarray, k: int) -> np.ndarray:
        src = self.sources_
        out = np.tile(src.popular[:k], (len(user_rows), 1))
        warm = np.flatnonzero(user_rows >= 0)
        if len(warm) == 0:
            return out
        for j, (items, _) in enumerate(self.ranked(src.histories(user_rows[warm]))):
            out[warm[j]] = self.top(items, k)
        return out


def fit_ranker(
    events: pd.DataFrame,
    catalogue: pd.DataFrame,
    weighting: WeightingConfig,
    config: RerankerConfig,
    *,
    seed: int = 0,
) -> RerankRecommender:
    """Vitrine's ranker fitted on a training log: what `vitrine train` writes into a bundle, and what
    `vitrine evaluate recommenders` fits on a time split's training days (then scores as serving loads it).

    ``catalogue`` has an item_id column and any of group, class, colour, pattern and price; where the log
    holds prices paid, an item's price is taken from ``events`` alone (``prices_as_of``), so no later day leaks.
    """
    priced = prices_as_of(catalogue, events).set_index("item_id")
    ranker = RerankRecommender(config, catalogue=priced, weighting=weighting, seed=seed)
    return ranker.fit(build_interactions(events, weighting))
