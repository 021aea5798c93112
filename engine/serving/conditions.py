"""Who the shopper is and what they should be shown: shopper vectors, and conditions drawn for them.

A shopper's vector is stored (seen in training) or folded in from their session; p(condition | shopper)
comes from their top-``top_items`` items by u·v, weighted by rank (w_r = 1 / log2(r + 1), the DCG
discount) and summed per (class, colour, pattern) condition:
    p(c | u) ∝ Σ_{i in top, cond(i) = c} w_rank(i).
Without a vector (a new shopper with no events) the conditions follow catalogue popularity,
p(c) ∝ Σ_{cond(i) = c} popularity(i). n distinct conditions are then drawn without replacement
(Gumbel-top-k, Kool et al. 2019).
"""

from __future__ import annotations

import numpy as np

from engine.artifacts.bundle import Bundle
from engine.serving.sessions import SessionEvent, with_session


class ShopperVectors:
    """Shopper vectors from the bundle's embeddings: stored, or folded in from a session."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle

    def user_vector(self, user_id: str) -> np.ndarray | None:
        """The stored vector of a shopper seen in training, or None."""
        row = self.bundle.embeddings.user_index(user_id)
        return None if row < 0 else self.bundle.embeddings.user_factors[row]

    def session_vector(self, user_id: str, events: list[SessionEvent]) -> np.ndarray | None:
        """Fold the session's events into the shopper's history (or into nothing, for a new shopper).

        One ALS half-step (``EmbeddingModel.fold_in``) on the shopper's weighted training history plus the
        session's events weighted by type (the bundle's weighting, no decay: they are happening now).
        Items the embedding model does not know are ignored; None when nothing is left.
        """
        emb = self.bundle.embeddings
        weights = self.bundle.weighting.type_weights
        rows = emb.item_indices([e.item_id for e in events])
        strength = np.array([weights.get(e.event_type, 0.0) for e in events], dtype=np.float64)
        keep = rows >= 0
        urow = emb.user_index(user_id)
        if urow >= 0:
            hist = self.bundle.history[urow]
            hist_rows, hist_strength = hist.indices, hist.data
        else:
            hist_rows, hist_strength = np.empty(0, np.int64), np.empty(0)
        rows, strength = with_session(hist_rows, hist_strength, rows[keep], strength[keep])
        if rows.size == 0:
            return self.user_vector(user_id)
        return emb.fold_in(rows, strength)

    def knows_any(self, events: list[SessionEvent]) -> bool:
        """Whether the embedding model knows any item of the session (so the session shapes the vector)."""
        return bool((self.bundle.embeddings.item_indices([e.item_id for e in events]) >= 0).any())


class ConditionModel:
    """The catalogue's distinct conditions and p(condition | shopper) over them."""

    def __init__(self, bundle: Bundle, *, top_items: int) -> None:
        self.bundle = bundle
        self.top_items = top_items
        # distinct conditions of the catalogue (n_conditions, n_attributes), and each embedding item's (-1: none)
        self.codes, cond_of_item = np.unique(bundle.codes, axis=0, return_inverse=True)
        cond_of_item = cond_of_item.ravel()
        self.of_catalogue_row = cond_of_item  # (n_catalogue_items,) each catalogue item's condition
        self._of_embedding_item = np.full(len(bundle.embeddings.item_ids), -1, dtype=np.int64)
        rows = bundle.embedding_rows
        self._of_embedding_item[rows[rows >= 0]] = cond_of_item[rows >= 0]
        self._no_condition = np.flatnonzero(self._of_embedding_item < 0)
        popularity = bundle.catalogue["popularity"].to_numpy(dtype=np.float64)
        pop = np.bincount(cond_of_item, weights=popularity, minlength=len(self.codes))
        self.popular = (pop + 1e-9) / (pop + 1e-9).sum()

    def __len__(self) -> int:
        return len(self.codes)

    def _top(self, user_vector: np.ndarray) -> np.ndarray:
        k = min(self.top_items, len(self._of_embedding_item) - len(self._no_condition))
        top, _ = self.bundle.embeddings.recommend(user_vector, k, exclude=self._no_condition)
        return top

    def distribution(self, user_vector: np.ndarray | None) -> np.ndarray:
        """p(condition | shopper) over ``codes``; popularity when there is no vector."""
        if user_vector is None:
            return self.popular
        top = self._top(user_vector)
        weights = 1.0 / np.log2(np.arange(2, len(top) + 2))
        p = np.bincount(self._of_embedding_item[top], weights=weights, minlength=len(self.codes))
        return p / p.sum()

    def of_items(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(p(condition | shopper), support) from the shopper's ranked items, given as catalogue rows best first
        (-1 for an item the catalogue lacks): the same rank weights as :meth:`distribution`; popularity when
        none of them is in the catalogue."""
        rows = np.asarray(rows, dtype=np.int64)
        weights = 1.0 / np.log2(np.arange(2, len(rows) + 2))
        keep = rows >= 0
        conds = self.of_catalogue_row[rows[keep]]
        p = np.bincount(conds, weights=weights[keep], minlength=len(self.codes))
        support = np.bincount(conds, minlength=len(self.codes))
        return (p / p.sum() if p.sum() > 0 else self.popular), support

    def support(self, user_vector: np.ndarray | None) -> np.ndarray:
        """How many of the shopper's top items fall in each condition (zeros without a vector)."""
        if user_vector is None:
            return np.zeros(len(self.codes), dtype=np.int64)
        return np.bincount(self._of_embedding_item[self._top(user_vector)], minlength=len(self.codes))

    def restrict(self, p: np.ndarray, classes: tuple[str, ...] | None) -> np.ndarray:
        """p limited to conditions of the allowed ``classes`` (uniform over them if p gives them nothing)."""
        if classes is None:
            return p
        class_of = np.asarray(self.bundle.encoder.values_[self.bundle.attributes[0]])[self.codes[:, 0]]
        mask = np.isin(class_of, classes)
        p = np.where(mask, p, 0.0)
        return p / p.sum() if p.sum() > 0 else mask / mask.sum()

    @staticmethod
    def choose(p: np.ndarray, n: int, seed: int) -> np.ndarray:
        """n condition indices: distinct while p has enough support (Gumbel-top-k), then the most likely again."""
        rng = np.random.default_rng(seed)
        with np.errstate(divide="ignore"):
            keys = np.log(p) + rng.gumbel(size=len(p))
        order = np.argsort(-keys, kind="stable")
        support = int((p > 0).sum())
        chosen = list(order[: min(n, support)])
        by_p = np.argsort(-p, kind="stable")[:support]
        while len(chosen) < n:
            chosen.append(by_p[(len(chosen) - support) % support])
        return np.asarray(chosen, dtype=np.int64)
