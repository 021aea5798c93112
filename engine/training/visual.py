"""Training and validation of the visual encoder (``models.visual``): DVBPR on frozen CNN features.

Objective (Kang et al., ICDM 2017, eq. 2, with the shoppers' vectors u fixed to the embedding model's):

    L = − Σ_(u,i,j) ln σ(u · f(x_i) − u · f(x_j))  +  λ_reg · Σ_i ‖f(x_i) − v_i‖² / mean‖v‖²

over triples of a shopper u, an item i they interacted with and a random item j; the optional second term
(content → CF-factor regression) would keep f in the scale of the item factors v; it costs ranking quality
on the demo store, so λ_reg defaults to 0 and u · f(x) is a ranking score, not a calibrated u · v.

Validation (``validate_visual``), on a split of the interaction matrix that the serving model never uses:
- cold items: a share of the items with images is removed from the matrix entirely; embeddings and f are
  fitted without them; Recall@K of each shopper's interactions with them when the cold items are ranked by
  u · f(x), against a random ranking, condition popularity, and the mean factor of the warm items of the
  same (class, colour, pattern) — the last says what the image adds over the attributes;
- AUC (Kang et al. 2017, eq. 10): one random interaction per shopper is withheld; the share of items the
  shopper never touched that rank below it, by u · f(x) — beside u · v (the CF model itself) and popularity.

With ``privacy.target_epsilon`` set, f trains with user-level DP-SGD (``engine.training.visual_private``): one
unit is one shopper with all their interactions. The shoppers' vectors u are inputs here; they come from the
embedding model, so the whole chain is private only if that model is too (``engine.recommend.private_als``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from engine.recommend.factors import fit_embeddings
from engine.training.classifier import embed_images
from engine.training.privacy import PrivacyConfig, not_private
from models.classifier import AttributeClassifier
from models.embeddings import EmbeddingConfig, EmbeddingModel
from models.visual import VisualCalibration, VisualComponent, VisualEncoder, VisualEncoderConfig, factors_digest

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class VisualTrainConfig:
    enabled: bool = True
    hidden: int = 256
    use_attributes: bool = False  # image only by default: preference maximisation can only move the image
    steps: int = 800
    batch_size: int = 512
    lr: float = 2e-3
    weight_decay: float = 1e-5
    # On the demo store (validation split, 800 steps): λ_reg = 0 → AUC 0.825, cold Recall@20 0.470;
    # 0.1 → 0.794, 0.395; 1 → 0.732, 0.303. The anchor to the item factors costs ranking quality, so it is off.
    regression_weight: float = 0.0
    holdout_items: float = 0.1  # cold-item validation: share of items with images removed from the matrix
    eval_k: int = 20
    calibration_samples: int = 256
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)  # user-level DP-SGD when on
    pairs_per_shopper: int = 8  # private training only: (liked, random) pairs per sampled shopper and step

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.steps < 1 or self.batch_size < 2 or self.lr <= 0 or self.eval_k < 1:
            raise ValueError("hidden, steps, eval_k >= 1, batch_size >= 2 and lr > 0 are required")
        if not 0.0 < self.holdout_items < 0.5:
            raise ValueError(f"holdout_items must be in (0, 0.5); got {self.holdout_items}")
        if self.regression_weight < 0 or self.weight_decay < 0 or self.calibration_samples < 8:
            raise ValueError("regression_weight, weight_decay must be >= 0 and calibration_samples >= 8")
        if self.pairs_per_shopper < 1:
            raise ValueError(f"pairs_per_shopper must be >= 1; got {self.pairs_per_shopper}")


@dataclass(frozen=True, kw_only=True)
class VisualData:
    """Catalogue items with an image: their CNN features, codes, and row in the interaction matrix (-1: none)."""

    item_ids: np.ndarray  # (n,) str
    features: np.ndarray  # (n, feature_dim) float32, raw classifier features
    codes: np.ndarray  # (n, n_attributes) int64
    matrix_cols: np.ndarray  # (n,) int64 column of each item in the user × item matrix, or -1


def visual_data(
    classifier: AttributeClassifier, images: np.ndarray, item_ids: np.ndarray, codes: np.ndarray, embedding_items
) -> VisualData:
    """Features of (n, S, S, C) uint8 catalogue images; ``embedding_items`` maps item ids to matrix columns."""
    feats = embed_images(classifier, images).astype(np.float32)
    cols = np.asarray(embedding_items(list(map(str, item_ids))), dtype=np.int64)
    return VisualData(
        item_ids=np.asarray(item_ids, dtype=str), features=feats, codes=np.asarray(codes), matrix_cols=cols
    )


def _positives(matrix: sp.csr_matrix, col_to_item: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(user, visual item) pairs of the matrix's non-zeros whose column has an image."""
    coo = matrix.tocoo()
    items = col_to_item[coo.col]
    keep = (items >= 0) & (coo.data > 0)
    return coo.row[keep].astype(np.int64), items[keep].astype(np.int64)


def train_encoder(
    data: VisualData,
    train_items: np.ndarray,  # (m,) rows of ``data`` that f may learn from (warm items)
    matrix: sp.csr_matrix,  # (n_users, n_cols) interactions the user vectors were fitted on
    user_factors: np.ndarray,  # (n_users, d)
    item_factors: np.ndarray,  # (n_cols, d)
    config: VisualTrainConfig,
    *,
    seed: int,
    show_progress: bool = True,
) -> VisualEncoder:
    """Fit f by BPR on fixed user vectors plus regression onto the item factors (see the module docstring)."""
    return fit_encoder(
        data, train_items, matrix, user_factors, item_factors, config, seed=seed, show_progress=show_progress
    )[0]


def fit_encoder(
    data: VisualData,
    train_items: np.ndarray,  # (m,) rows of ``data`` that f may learn from (warm items)
    matrix: sp.csr_matrix,  # (n_users, n_cols) interactions the user vectors were fitted on
    user_factors: np.ndarray,  # (n_users, d)
    item_factors: np.ndarray,  # (n_cols, d)
    config: VisualTrainConfig,
    *,
    seed: int,
    show_progress: bool = True,
) -> tuple[VisualEncoder, dict]:
    """:func:`train_encoder`, with the privacy record of the fit (ε spent, or "not private")."""
    cardinalities = tuple(int(c) for c in data.codes.max(axis=0) + 1) if config.use_attributes else ()
    enc = VisualEncoder(
        VisualEncoderConfig(
            feature_dim=data.features.shape[1],
            item_dim=item_factors.shape[1],
            hidden=config.hidden,
            cardinalities=cardinalities,
        )
    )
    col_to_item = np.full(matrix.shape[1], -1, dtype=np.int64)
    allowed = np.zeros(len(data.item_ids), dtype=bool)
    allowed[train_items] = True
    ok = allowed & (data.matrix_cols >= 0)
    col_to_item[data.matrix_cols[ok]] = np.flatnonzero(ok)
    users, items = _positives(matrix, col_to_item)
    if len(users) == 0:
        raise ValueError("no interaction with an item that has an image: the visual encoder has nothing to learn")
    pool = np.flatnonzero(ok)
    feats = torch.from_numpy(data.features)
    codes = torch.from_numpy(data.codes.astype(np.int64))
    uf = torch.from_numpy(np.ascontiguousarray(user_factors, dtype=np.float32))
    target = torch.zeros(len(data.item_ids), item_factors.shape[1])
    target[torch.from_numpy(pool)] = torch.from_numpy(item_factors[data.matrix_cols[pool]].astype(np.float32))
    v_scale = float(target[torch.from_numpy(pool)].pow(2).sum(1).mean().clamp_min(1e-8))
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(enc.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    enc.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small MLP: extra threads only add synchronisation (40× slower on a busy 2-core box)
    try:
        if config.privacy.enabled:
            from engine.training.visual_private import fit_private

            pairs = PreferencePairs(users=users, items=items, pool=pool)
            record = fit_private(
                enc, opt, pairs, feats, codes, uf, target, v_scale, config, seed=seed, progress=show_progress
            )
        else:
            _fit(enc, opt, users, items, pool, feats, codes, uf, target, v_scale, config, rng, show_progress)
            record = not_private()
    finally:
        torch.set_num_threads(threads)
    return enc.eval(), record


@dataclass(frozen=True)
class PreferencePairs:
    """What f learns from: (shopper row, liked item row) pairs and the item rows random negatives come from."""

    users: np.ndarray  # (n,) int64 shopper rows
    items: np.ndarray  # (n,) int64 rows of VisualData
    pool: np.ndarray  # (p,) int64 rows of VisualData


def _fit(enc, opt, users, items, pool, feats, codes, uf, target, v_scale, config, rng, show_progress) -> None:
    bar = tqdm(range(config.steps), desc="visual encoder", unit="step", disable=not show_progress)
    for step in bar:
        pick = rng.integers(0, len(users), config.batch_size)
        u, i = torch.from_numpy(users[pick]), torch.from_numpy(items[pick])
        j = torch.from_numpy(pool[rng.integers(0, len(pool), config.batch_size)])
        fi = enc(feats[i], codes[i] if config.use_attributes else None)
        fj = enc(feats[j], codes[j] if config.use_attributes else None)
        diff = (uf[u] * (fi - fj)).sum(1)
        loss = -F.logsigmoid(diff).mean()
        if config.regression_weight:
            loss = loss + config.regression_weight * (fi - target[i]).pow(2).sum(1).mean() / v_scale
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")


@torch.no_grad()
def encode_items(encoder: VisualEncoder, data: VisualData, rows: np.ndarray | None = None) -> np.ndarray:
    """(n, item_dim) f of the given rows of ``data`` (all when None)."""
    rows = np.arange(len(data.item_ids)) if rows is None else rows
    feats = torch.from_numpy(data.features[rows])
    codes = torch.from_numpy(data.codes[rows].astype(np.int64)) if encoder.config.uses_attributes else None
    return encoder(feats, codes).numpy().astype(np.float32)


def auc_per_user(scores: np.ndarray, positive: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """AUC of each row's one positive column against its non-excluded other columns (ties count ½).

    scores: (B, n) · positive: (B,) column of the withheld item · excluded: (B, n) bool, the row's other
    known items (never negatives). Kang et al. (2017), eq. 10.
    """
    pos = scores[np.arange(len(scores)), positive][:, None]
    neg = ~excluded
    neg[np.arange(len(scores)), positive] = False
    below = ((scores < pos) & neg).sum(1) + 0.5 * ((scores == pos) & neg).sum(1)
    return below / np.maximum(neg.sum(1), 1)


def recall_at_k(scores: np.ndarray, truth: np.ndarray, k: int) -> np.ndarray:
    """Per row: |top-k ∩ truth| / min(k, |truth|); scores (B, n), truth (B, n) bool with ≥ 1 True per row."""
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    hits = np.take_along_axis(truth, top, axis=1).sum(1)
    return hits / np.minimum(k, truth.sum(1))


def validate_visual(
    data: VisualData,
    matrix: sp.csr_matrix,  # (n_users, n_cols) all interactions
    embedding_config: EmbeddingConfig,
    config: VisualTrainConfig,
    *,
    seed: int,
    show_progress: bool = True,
) -> dict:
    """Cold-item Recall@K and warm AUC of f, on a split the serving model never sees (module docstring)."""
    rng = np.random.default_rng(seed)
    matrix = sp.csr_matrix(matrix)
    with_cols = np.flatnonzero(data.matrix_cols >= 0)
    n_cold = max(1, round(config.holdout_items * len(with_cols)))
    cold = np.sort(rng.choice(with_cols, n_cold, replace=False))
    warm = np.setdiff1d(with_cols, cold)
    cold_cols, warm_cols = data.matrix_cols[cold], data.matrix_cols[warm]

    # withhold one random warm interaction per shopper who has at least two (AUC)
    full = matrix.tocsr()
    warm_mask = np.zeros(matrix.shape[1], dtype=bool)
    warm_mask[warm_cols] = True
    withheld_user, withheld_col = [], []
    for u in range(full.shape[0]):
        cols = full.indices[full.indptr[u] : full.indptr[u + 1]]
        cols = cols[warm_mask[cols]]
        if len(cols) >= 2:
            withheld_user.append(u)
            withheld_col.append(int(rng.choice(cols)))
    train = full.tolil(copy=True)
    train[:, cold_cols] = 0
    for u, c in zip(withheld_user, withheld_col, strict=True):
        train[u, c] = 0
    train = train.tocsr()
    train.eliminate_zeros()

    started = time.perf_counter()
    ids_u = np.arange(train.shape[0]).astype(str)
    ids_i = np.arange(train.shape[1]).astype(str)
    emb = fit_embeddings(train, ids_u, ids_i, embedding_config, seed=seed, show_progress=False)
    encoder, privacy = fit_encoder(
        data, warm, train, emb.user_factors, emb.item_factors, config, seed=seed, show_progress=show_progress
    )
    f_all = encode_items(encoder, data)
    user_vecs = emb.user_factors

    # --- cold items: rank the held-out items for the shoppers who touched them ---------------------------
    k = config.eval_k
    cold_full = full[:, cold_cols]
    users = np.flatnonzero(np.diff(cold_full.indptr) > 0)
    truth = cold_full[users].toarray() > 0
    item_pop = np.asarray(train.sum(axis=0)).ravel()
    cond_key = [tuple(c) for c in data.codes]
    cond_pop: dict[tuple, list[float]] = {}
    cond_vec: dict[tuple, list[np.ndarray]] = {}
    for r in warm:
        cond_pop.setdefault(cond_key[r], []).append(item_pop[data.matrix_cols[r]])
        cond_vec.setdefault(cond_key[r], []).append(emb.item_factors[data.matrix_cols[r]])
    pop_scores = np.array([np.mean(cond_pop.get(cond_key[r], [0.0])) for r in cold])
    mean_v = np.zeros_like(emb.item_factors[0])
    cond_mean = np.stack([np.mean(cond_vec[cond_key[r]], axis=0) if cond_key[r] in cond_vec else mean_v for r in cold])
    u_cold = user_vecs[users]
    cold_results = {
        "visual_encoder": float(recall_at_k(u_cold @ f_all[cold].T, truth, k).mean()),
        "condition_mean_factor": float(recall_at_k(u_cold @ cond_mean.T, truth, k).mean()),
        "condition_popularity": float(
            recall_at_k(np.broadcast_to(pop_scores + 1e-9 * rng.random(len(cold)), truth.shape), truth, k).mean()
        ),
        # expected recall of a uniformly random ranking: E|top-k ∩ T| = k·|T|/n
        "random": float(np.mean(min(k, len(cold)) * truth.sum(1) / len(cold) / np.minimum(k, truth.sum(1)))),
    }

    # --- AUC on the withheld warm interactions -------------------------------------------------------------
    col_pos = np.full(matrix.shape[1], -1, dtype=np.int64)
    col_pos[warm_cols] = np.arange(len(warm_cols))
    wu = np.asarray(withheld_user, dtype=np.int64)
    wpos = col_pos[np.asarray(withheld_col, dtype=np.int64)]
    aucs: dict[str, list[np.ndarray]] = {"visual_encoder": [], "embeddings": [], "popularity": []}
    f_warm, v_warm = f_all[warm], emb.item_factors[warm_cols]
    pop_warm = item_pop[warm_cols] + 1e-9 * rng.random(len(warm_cols))
    full_warm = full[:, warm_cols]
    for s in range(0, len(wu), 512):
        b = wu[s : s + 512]
        excluded = full_warm[b].toarray() > 0
        p = wpos[s : s + 512]
        aucs["visual_encoder"].append(auc_per_user(user_vecs[b] @ f_warm.T, p, excluded))
        aucs["embeddings"].append(auc_per_user(user_vecs[b] @ v_warm.T, p, excluded))
        aucs["popularity"].append(auc_per_user(np.broadcast_to(pop_warm, excluded.shape).copy(), p, excluded))
    auc = {name: float(np.concatenate(v).mean()) if v else float("nan") for name, v in aucs.items()}
    auc["random"] = 0.5
    return {
        "k": k,
        "cold_items": len(cold),
        "cold_users": len(users),
        "warm_items": len(warm),
        "auc_users": len(wu),
        "cold_recall": cold_results,
        "auc": auc,
        "privacy": privacy,
        "seconds": round(time.perf_counter() - started, 1),
    }


@torch.no_grad()
def calibrate(
    encoder: VisualEncoder,
    classifier: AttributeClassifier,
    generator: nn.Module,
    discriminator: nn.Module,
    codes: np.ndarray,  # (n_items, n_attributes) catalogue conditions to draw from
    user_factors: np.ndarray,  # (n_users, d)
    *,
    samples: int,
    seed: int,
) -> VisualCalibration:
    """Scales of û · f(G(z, c)) and of D(G(z, c), c) on generated images (see ``VisualCalibration``)."""
    rng = np.random.default_rng(seed)
    y = torch.as_tensor(codes[rng.choice(len(codes), samples)].astype(np.int64))
    z = torch.randn(samples, generator.config.z_dim, generator=torch.Generator().manual_seed(seed))
    x = generator(z, y)
    d = discriminator(x, y).numpy()
    fx = encoder(classifier.embed(x), y if encoder.config.uses_attributes else None).numpy()
    users = user_factors[rng.choice(len(user_factors), min(samples, len(user_factors)), replace=False)]
    users = users / np.maximum(np.linalg.norm(users, axis=1, keepdims=True), 1e-8)
    scores = users @ fx.T
    return VisualCalibration(
        score_std=float(max(scores.std(), 1e-6)),
        realism_mean=float(d.mean()),
        realism_std=float(max(d.std(), 1e-6)),
    )


def train_visual(
    data: VisualData,
    matrix: sp.csr_matrix,
    embeddings: EmbeddingModel,
    classifier: AttributeClassifier,
    generator: nn.Module,
    discriminator: nn.Module,
    config: VisualTrainConfig,
    *,
    seed: int,
    show_progress: bool = True,
) -> tuple[VisualComponent, dict]:
    """The serving visual encoder: f fitted on every interaction against the serving embeddings, calibrated;
    with the fit's privacy record (ε spent, or "not private")."""
    rows = np.flatnonzero(data.matrix_cols >= 0)
    encoder, privacy = fit_encoder(
        data,
        rows,
        matrix,
        embeddings.user_factors,
        embeddings.item_factors,
        config,
        seed=seed,
        show_progress=show_progress,
    )
    generator.eval()
    discriminator.eval()
    calibration = calibrate(
        encoder,
        classifier,
        generator,
        discriminator,
        data.codes,
        embeddings.user_factors,
        samples=config.calibration_samples,
        seed=seed,
    )
    component = VisualComponent(
        encoder=encoder,
        calibration=calibration,
        item_ids=data.item_ids,
        item_vectors=encode_items(encoder, data),
        factors_digest=factors_digest(embeddings.item_factors),
    )
    return component, privacy
