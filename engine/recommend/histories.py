"""Shoppers' histories as the candidate features read them: stored in the fitted sources, or plus a session.

A :class:`Histories` holds one row per shopper. :func:`stored_histories` slices a shopper seen in training
out of the sources; :func:`with_sessions` adds a session's events (a known or a new shopper's), which is how
serving ranks a shopper during a visit with the same features as the ranker was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from engine.recommend.candidates import CandidateSources

#: per shopper: (item rows, event strengths, whether each event was a purchase)
Session = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True, kw_only=True)
class Histories:
    """What the candidate features read of B shoppers, one row each."""

    strength: sp.csr_matrix  # (B, n_items) weighted event strengths
    age: sp.csr_matrix  # (B, n_items) days since the last event on each own item (1 = the last day), 0 = none
    purchases: sp.csr_matrix  # (B, n_items) purchase counts
    session_items: sp.csr_matrix  # (B, n_items) distinct items of the session each own item was last seen in
    rebuy: sp.csr_matrix | None  # (B, n_items) re-buy rate of the own item's channel + 1, or None
    factors: np.ndarray  # (B, d) the sources' ALS vectors of the shoppers


def stored_histories(src: CandidateSources, user_rows: np.ndarray) -> Histories:
    """The stored histories of shoppers seen in training (``user_rows`` ≥ 0)."""
    return Histories(
        strength=src.strength[user_rows],
        age=src.own_age[user_rows],
        purchases=src.purchases[user_rows],
        session_items=src.own_session[user_rows],
        rebuy=src.own_rebuy[user_rows] if src.own_rebuy is not None else None,
        factors=src.als.user_factors[user_rows],
    )


def with_sessions(
    src: CandidateSources,
    user_rows: np.ndarray,  # (B,) rows of shoppers seen in training, -1 for new ones
    sessions: list[Session],
) -> Histories:
    """Each shopper's stored history (none for a new one) plus their session: its items count as bought or
    seen on the last day (in a session of that many items), and the shopper's ALS vector is folded in from
    the whole (one ALS half-step, ``EmbeddingModel.fold_in``). Every shopper needs at least one known item in
    history or session (ValueError otherwise)."""
    n_items = src.strength.shape[1]
    stored = stored_histories(src, np.maximum(user_rows, 0))
    keep = sp.diags((np.asarray(user_rows) >= 0).astype(np.float32))  # a new shopper keeps nothing of row 0
    r = np.concatenate([np.full(len(items), b) for b, (items, _, _) in enumerate(sessions)])
    c = np.concatenate([np.asarray(items, np.int64) for items, _, _ in sessions])
    shape = (len(sessions), n_items)
    add = sp.csr_matrix((np.concatenate([np.asarray(w, np.float32) for _, w, _ in sessions]), (r, c)), shape=shape)
    bought = np.concatenate([np.asarray(p, np.float32) for _, _, p in sessions])
    seen = sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=shape)
    seen.data[:] = 1.0  # an item counts once, however many events it had
    hist = (keep @ stored.strength + add).tocsr()
    age = (keep @ stored.age).tocsr()
    age = (age - age.multiply(seen) + seen).tocsr()  # a session item's last event is today's
    size = np.asarray(seen.sum(axis=1)).ravel()
    session_items = (keep @ stored.session_items).tocsr()
    session_items = (session_items - session_items.multiply(seen) + sp.diags(size) @ seen).tocsr()
    purchases = (keep @ stored.purchases + sp.csr_matrix((bought, (r, c)), shape=shape)).tocsr()
    factors = np.zeros((len(sessions), src.als.dim), np.float32)
    for b in range(len(sessions)):
        start, end = hist.indptr[b], hist.indptr[b + 1]
        if end == start:
            raise ValueError("a shopper with neither a stored history nor a known session item has no candidates")
        factors[b] = src.als.fold_in(hist.indices[start:end], hist.data[start:end])
    for m in (hist, age, session_items, purchases):
        m.eliminate_zeros()
    return Histories(
        strength=hist,
        age=age,
        purchases=purchases,
        session_items=session_items,
        rebuy=(keep @ stored.rebuy).tocsr() if stored.rebuy is not None else None,
        factors=factors,
    )
