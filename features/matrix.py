"""The user × item interaction matrix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.vocab import IdVocabulary


def interaction_matrix(
    events: pd.DataFrame, weights: np.ndarray, users: IdVocabulary, items: IdVocabulary
) -> sp.csr_matrix:
    """Sum event weights into a (n_users, n_items) float32 CSR matrix.

    Events whose user or item is not in the vocabularies are left out: callers fit the vocabularies on
    the events they mean to train on, so this only drops rows on purpose (e.g. test-period users).
    """
    if len(weights) != len(events):
        raise ValueError(f"{len(weights)} weights for {len(events)} events")
    u = users.transform(events["user_id"].to_numpy())
    i = items.transform(events["item_id"].to_numpy())
    keep = (u >= 0) & (i >= 0)
    m = sp.coo_matrix(
        (weights[keep].astype(np.float32), (u[keep], i[keep])),
        shape=(len(users), len(items)),
        dtype=np.float32,
    ).tocsr()
    m.sum_duplicates()
    m.sort_indices()
    return m
