"""User and item embeddings for implicit feedback, with fold-in of new users from their events.

The factors are learned by implicit's ALS (Hu, Koren & Volinsky, ICDM 2008) or BPR (Rendle et al.,
UAI 2009); ``engine.recommend.factors`` runs that training. This module holds the learned component:
factors, the id vocabularies, scoring, fold-in, save and load.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from models.io import config_from_dict, config_to_dict, read_json, write_json

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class EmbeddingConfig:
    """Hyperparameters of the embedding model.

    ``alpha`` scales event strength into ALS confidence, c = alpha * strength, as implicit does; Hu et al.
    (2008, eq. 6) write 1 + alpha * r, which differs only in the constant that the event weights absorb.
    """

    algorithm: Literal["als", "bpr"] = "als"
    factors: int = 64
    regularization: float = 0.05
    iterations: int = 15
    alpha: float = 2.0
    learning_rate: float = 0.01  # BPR only
    # implicit's thread count, 0 = every core. ALS gives the same factors on any count; BPR's lock-free SGD
    # gives the same factors for a seed only on 1 thread (on 2 threads, H&M item factors differ by up to 0.06)
    threads: int = 0

    def __post_init__(self) -> None:
        if self.algorithm not in ("als", "bpr"):
            raise ValueError(f"algorithm must be 'als' or 'bpr'; got {self.algorithm!r}")
        if not (isinstance(self.factors, int) and 1 <= self.factors <= 1024):
            raise ValueError(f"factors must be an integer in [1, 1024]; got {self.factors!r}")
        if not (isinstance(self.threads, int) and self.threads >= 0):
            raise ValueError(f"threads must be an integer >= 0 (0 = every core); got {self.threads!r}")
        if self.regularization < 0 or self.alpha <= 0 or self.learning_rate <= 0:
            raise ValueError("regularization must be >= 0, alpha and learning_rate > 0")
        if not (isinstance(self.iterations, int) and self.iterations >= 1):
            raise ValueError(f"iterations must be a positive integer; got {self.iterations!r}")


class EmbeddingModel:
    """Learned user and item factors; score(u, i) = user_factors[u] · item_factors[i].

    ``user_ids`` / ``item_ids`` give the string id of each row. For BPR the last item column is implicit's
    item bias and the matching user column is 1.
    """

    def __init__(
        self,
        config: EmbeddingConfig,
        user_factors: np.ndarray,  # (n_users, d) float32
        item_factors: np.ndarray,  # (n_items, d) float32
        user_ids: np.ndarray,
        item_ids: np.ndarray,
    ) -> None:
        if user_factors.shape[1] != item_factors.shape[1]:
            raise ValueError(f"factor widths differ: users {user_factors.shape}, items {item_factors.shape}")
        if len(user_ids) != len(user_factors) or len(item_ids) != len(item_factors):
            raise ValueError("ids and factors have different lengths")
        self.config = config
        self.user_factors = np.ascontiguousarray(user_factors, dtype=np.float32)
        self.item_factors = np.ascontiguousarray(item_factors, dtype=np.float32)
        self.user_ids = np.asarray(user_ids, dtype=str)
        self.item_ids = np.asarray(item_ids, dtype=str)
        self._user_index = {u: k for k, u in enumerate(self.user_ids)}
        self._item_index = {i: k for k, i in enumerate(self.item_ids)}
        # Gram matrix for fold-in, computed once: Y^T Y (Hu et al. 2008, section 4).
        self._gram = self.item_factors.T.astype(np.float64) @ self.item_factors.astype(np.float64)

    @property
    def dim(self) -> int:
        return self.item_factors.shape[1]

    def user_index(self, user_id: str) -> int:
        """Row of a known user, or -1."""
        return self._user_index.get(user_id, -1)

    def item_index(self, item_id: str) -> int:
        return self._item_index.get(item_id, -1)

    def item_indices(self, item_ids: list[str]) -> np.ndarray:
        return np.array([self._item_index.get(i, -1) for i in item_ids], dtype=np.int64)

    def fold_in(
        self,
        item_rows: np.ndarray,  # (m,) int item rows the user interacted with
        strengths: np.ndarray,  # (m,) float event strengths (summed event weights)
        *,
        base: np.ndarray | None = None,  # (d,) optional prior vector, e.g. the stored user's factors
        base_weight: float = 1.0,
    ) -> np.ndarray:
        """A user vector from interactions alone: one ALS half-step against the fixed item factors.

        Solves (YᵀY + Yᵀ(C − I)Y + λ'I) x = YᵀC p + λ'·base, λ' = λ·base_weight, with c_i = alpha·strength_i and
        p_i = 1 (Hu et al. 2008, eq. 4). With ``base`` the solution is pulled towards a stored vector
        rather than zero, which is how a known shopper's session updates their long-term taste.
        """
        item_rows = np.asarray(item_rows, dtype=np.int64)
        strengths = np.asarray(strengths, dtype=np.float64)
        if item_rows.shape != strengths.shape:
            raise ValueError("item_rows and strengths must have the same shape")
        if (item_rows < 0).any() or (item_rows >= len(self.item_ids)).any():
            raise ValueError("fold_in got item rows outside the model's catalogue")
        d = self.dim
        lam = max(self.config.regularization, 1e-6)
        prior = lam * (base_weight if base is not None else 1.0)
        a = self._gram + prior * np.eye(d)
        b = np.zeros(d)
        if item_rows.size:
            y = self.item_factors[item_rows].astype(np.float64)  # (m, d)
            c = self.config.alpha * np.clip(strengths, 0.0, None)
            a += (y * (c - 1.0)[:, None]).T @ y
            b += c @ y
        if base is not None:
            b += prior * np.asarray(base, dtype=np.float64)
        return np.linalg.solve(a, b).astype(np.float32)

    def scores(self, user_vectors: np.ndarray) -> np.ndarray:
        """(B, n_items) scores for (B, d) user vectors."""
        return np.atleast_2d(user_vectors).astype(np.float32) @ self.item_factors.T

    def recommend(
        self, user_vector: np.ndarray, k: int, *, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item rows and scores for one (d,) user vector, leaving out ``exclude`` rows."""
        s = self.scores(user_vector)[0]
        if exclude is not None and len(exclude):
            s[np.asarray(exclude, dtype=np.int64)] = -np.inf
        k = min(k, len(s))
        top = np.argpartition(-s, k - 1)[:k]
        top = top[np.argsort(-s[top], kind="stable")]
        return top, s[top]

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_json(directory / "config.json", config_to_dict(self.config))
        np.savez(
            directory / "factors.npz",
            user_factors=self.user_factors,
            item_factors=self.item_factors,
            user_ids=self.user_ids,
            item_ids=self.item_ids,
        )

    @classmethod
    def load(cls, directory: Path) -> EmbeddingModel:
        directory = Path(directory)
        config = config_from_dict(EmbeddingConfig, read_json(directory / "config.json"), source=str(directory))
        with np.load(directory / "factors.npz", allow_pickle=False) as f:
            return cls(config, f["user_factors"], f["item_factors"], f["user_ids"], f["item_ids"])
