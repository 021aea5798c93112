"""Visual encoder training and its metrics, with known answers."""

import numpy as np
import scipy.sparse as sp

from engine.training.visual import VisualData, VisualTrainConfig, auc_per_user, encode_items, recall_at_k, train_encoder


def test_auc_counts_negatives_below_the_positive_and_ignores_other_known_items():
    scores = np.array([[0.9, 0.1, 0.5, 0.95], [0.2, 0.3, 0.3, 0.1]])
    positive = np.array([0, 1])
    excluded = np.array([[False, False, False, True], [False, False, False, False]])
    # row 0: negatives 0.1, 0.5 (0.95 is another known item) → both below → 1.0
    # row 1: negatives 0.2 (below), 0.3 (tie, ½), 0.1 (below) → 2.5 / 3
    np.testing.assert_allclose(auc_per_user(scores, positive, excluded), [1.0, 2.5 / 3])


def test_recall_at_k_divides_by_the_smaller_of_k_and_the_truth():
    scores = np.array([[0.9, 0.8, 0.1, 0.0], [0.0, 0.1, 0.2, 0.3]])
    truth = np.array([[True, False, True, True], [True, False, False, False]])
    np.testing.assert_allclose(recall_at_k(scores, truth, 2), [0.5, 0.0])


def test_the_encoder_learns_to_rank_items_whose_features_match_the_shoppers_taste():
    # Two tastes: shoppers 0-19 like items whose first feature is high, 20-39 the second. Item factors
    # and user factors encode that; a held-out item of each kind must be scored by its features alone.
    rng = np.random.default_rng(0)
    n_items = 40
    kind = np.arange(n_items) % 2
    feats = rng.normal(0, 0.1, (n_items, 6)).astype(np.float32)
    feats[np.arange(n_items), kind] += 1.0
    item_f = np.stack([kind == 0, kind == 1], axis=1).astype(np.float32)
    user_f = np.repeat(np.eye(2, dtype=np.float32), 20, axis=0)
    rows, cols = [], []
    for u in range(40):
        liked = np.flatnonzero(kind == (u // 20))[:-1]  # the last item of each kind stays cold
        rows += [u] * len(liked)
        cols += list(liked)
    matrix = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(40, n_items))
    data = VisualData(
        item_ids=np.arange(n_items).astype(str),
        features=feats,
        codes=np.zeros((n_items, 1), dtype=np.int64),
        matrix_cols=np.arange(n_items),
    )
    cold = np.array([n_items - 2, n_items - 1])
    warm = np.setdiff1d(np.arange(n_items), cold)
    cfg = VisualTrainConfig(hidden=16, steps=300, batch_size=64, lr=1e-2)
    enc = train_encoder(data, warm, matrix, user_f, item_f, cfg, seed=0, show_progress=False)
    f_cold = encode_items(enc, data, cold)  # kinds 0 and 1
    scores = user_f[[0, 20]] @ f_cold.T
    assert scores[0, 0] > scores[0, 1] and scores[1, 1] > scores[1, 0]
