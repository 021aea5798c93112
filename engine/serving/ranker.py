"""The bundle's ranker as serving uses it: a shopper's ranked items, from their history and their session.

The bundle's ``ranker/`` folder holds Vitrine's recommender (candidate sources re-ranked by LightGBM,
:mod:`engine.recommend.reranker`), saved by `vitrine train`. Serving loads it here and ranks every shopper
through it: a known shopper by their stored history; a session (a known or a new shopper's) by that
history plus the session's events, which become the candidates' features (own items seen today, folded-in
ALS vector). `vitrine evaluate recommenders` scores the same loaded object (:meth:`ShopperRanker.top_items`),
so the figures it prints are the ones the storefront gets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.recommend.ranker_files import load_ranker
from engine.recommend.reranker import RerankRecommender
from engine.serving.sessions import SessionEvent


@dataclass(frozen=True)
class Ranking:
    """A shopper's candidates, best first: item ids and the ranker's scores."""

    item_ids: np.ndarray  # (m,) str
    scores: np.ndarray  # (m,) float

    def top(self, k: int, fill: np.ndarray) -> list[str]:
        """The first k, filled up with ``fill`` (recent best sellers) the shopper's candidates lack."""
        items = [str(i) for i in self.item_ids[:k]]
        if len(items) < k:
            have = set(items)
            items += [str(i) for i in fill if str(i) not in have][: k - len(items)]
        return items


class ShopperRanker:
    """Ranks shoppers' items with a loaded :class:`RerankRecommender` (see the module)."""

    def __init__(self, ranker: RerankRecommender) -> None:
        self.ranker = ranker
        src = ranker.sources_
        self.item_ids = np.asarray(src.item_ids, dtype=str)
        self._users = {u: k for k, u in enumerate(np.asarray(src.user_ids, dtype=str))}
        self._items = {i: k for k, i in enumerate(self.item_ids)}
        self.type_weights = dict(ranker.weighting.type_weights)
        self.popular = self.item_ids[src.popular]  # the fill for short lists and the answer for new shoppers

    @classmethod
    def load(cls, directory: Path) -> ShopperRanker:
        return cls(load_ranker(directory))

    def knows(self, user_id: str) -> bool:
        return user_id in self._users

    @property
    def user_ids(self) -> list[str]:
        """Every shopper whose history the ranker holds."""
        return list(self._users)

    def rank(self, user_id: str, session: list[SessionEvent] | None = None) -> Ranking | None:
        """The shopper's ranked candidates; None when neither their history nor their session gives any (a new
        shopper whose session holds no item the ranker knows)."""
        row = self._users.get(user_id, -1)
        src = self.ranker.sources_
        if session:
            rows = np.array([self._items.get(e.item_id, -1) for e in session], dtype=np.int64)
            weights = np.array([self.type_weights.get(e.event_type, 0.0) for e in session])
            bought = np.array([e.event_type == "purchase" for e in session])
            keep = (rows >= 0) & (weights > 0)
            if keep.any():
                histories = src.session_histories(np.array([row]), [(rows[keep], weights[keep], bought[keep])])
                items, scores = self.ranker.ranked(histories)[0]
                return Ranking(self.item_ids[items], scores)
        if row < 0:
            return None
        items, scores = self.ranker.ranked(src.histories(np.array([row])))[0]
        return Ranking(self.item_ids[items], scores)

    def top_items(self, user_ids: list[str], k: int) -> list[list[str]]:
        """Each shopper's top k item ids without a session, in one batch (new shoppers: the recent best sellers).
        The same ranking as :meth:`rank` gives one shopper at a time."""
        rows = np.array([self._users.get(u, -1) for u in user_ids], dtype=np.int64)
        return [[str(i) for i in self.item_ids[top]] for top in self.ranker.recommend(rows, k)]
