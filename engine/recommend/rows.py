"""Row-wise helpers over sparse (shopper × item, item × item) matrices for the candidate sources."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp


def group_max(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    top = np.full(n_groups, -np.inf)
    np.maximum.at(top, groups, values)
    return top[groups]


def relative(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Each value divided by the largest value of its group (its shopper): scale-free per shopper."""
    top = np.full(n_groups, -np.inf)
    np.maximum.at(top, groups, values)
    top = np.where(np.isfinite(top) & (top > 0), top, 1.0)
    return values / top[groups]


def session_cooccurrence(ev: pd.DataFrame, n_items: int, max_items: int = 50) -> sp.csr_matrix:
    """Item-item cosine over sessions (H&M: a shopper's purchases of one day): items that share baskets.

    Sessions with more than ``max_items`` distinct items are left out: a session of n items adds n² pairs,
    and a browsing spree says little about which items go together (none in H&M's week or the demo store).
    """
    sessions = pd.factorize(ev["session_id"])[0]
    s_i = sp.csr_matrix(
        (np.ones(len(ev), np.float32), (sessions, ev["item_row"].to_numpy())), shape=(sessions.max() + 1, n_items)
    )
    s_i.data[:] = 1.0  # an item counts once per session
    s_i = s_i[np.diff(s_i.indptr) <= max_items]
    co = (s_i.T @ s_i).tocsr()
    inv = sp.diags(1.0 / np.sqrt(np.maximum(co.diagonal(), 1)))
    co.setdiag(0)
    co.eliminate_zeros()
    return (inv @ co @ inv).tocsr().astype(np.float32)


def row_top(matrix: sp.csr_matrix, n: int) -> sp.csr_matrix:
    """Keep each row's n largest entries."""
    matrix = matrix.tocsr()
    rows, cols, vals = [], [], []
    for r in range(matrix.shape[0]):
        start, end = matrix.indptr[r], matrix.indptr[r + 1]
        if end == start:
            continue
        d, c = matrix.data[start:end], matrix.indices[start:end]
        if len(d) > n:
            keep = np.argpartition(-d, n - 1)[:n]
            d, c = d[keep], c[keep]
        rows.append(np.full(len(d), r))
        cols.append(c)
        vals.append(d)
    if not rows:
        return sp.csr_matrix(matrix.shape, dtype=np.float32)  # type: ignore[arg-type]  # an empty (rows, cols)
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=matrix.shape)


def row_ranks(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Same pattern, values replaced by the 1-based rank of each entry within its row (largest = 1)."""
    matrix = matrix.tocsr().copy()
    for r in range(matrix.shape[0]):
        s, e = matrix.indptr[r], matrix.indptr[r + 1]
        if e > s:
            order = np.argsort(-matrix.data[s:e], kind="stable")
            ranks = np.empty(e - s)
            ranks[order] = np.arange(1, e - s + 1)
            matrix.data[s:e] = ranks
    return matrix


def nonzero(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """1.0 where ``matrix`` has a non-zero entry: the pattern of a candidate source."""
    out = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    out.eliminate_zeros()
    out.data[:] = 1.0
    return out


def onehot(codes: np.ndarray, n_items: int) -> sp.csr_matrix:
    """(n_items, values) one-hot rows of an attribute's codes; an unknown value (-1) gives an empty row."""
    known = np.flatnonzero(codes >= 0)
    return sp.csr_matrix(
        (np.ones(len(known), np.float32), (known, codes[known])), shape=(n_items, max(codes.max() + 1, 1))
    )
