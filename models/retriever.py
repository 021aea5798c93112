"""A FAISS index from vectors to catalogue item ids.

The index type follows the catalogue's size: exact inner-product search (``flat``) while it is cheap,
HNSW (Malkov & Yashunin 2018) for large catalogues. Vectors are expected L2-normalised when
``metric="cosine"``, so inner product is cosine similarity.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from models._io import config_from_dict, config_to_dict, read_json, write_json

FLAT_MAX_ITEMS = 50_000


@dataclass(frozen=True, kw_only=True)
class RetrieverConfig:
    index_type: str = "auto"  # "auto", "flat" or "hnsw"
    metric: str = "cosine"  # "cosine" (normalise, inner product) or "ip"
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 128

    def __post_init__(self) -> None:
        if self.index_type not in ("auto", "flat", "hnsw"):
            raise ValueError(f"index_type must be 'auto', 'flat' or 'hnsw'; got {self.index_type!r}")
        if self.metric not in ("cosine", "ip"):
            raise ValueError(f"metric must be 'cosine' or 'ip'; got {self.metric!r}")

    def resolved_type(self, n_items: int) -> str:
        if self.index_type != "auto":
            return self.index_type
        return "flat" if n_items <= FLAT_MAX_ITEMS else "hnsw"


def _prepare(x: np.ndarray, d: int, metric: str) -> np.ndarray:
    x = np.array(np.atleast_2d(x), dtype=np.float32, order="C", copy=True)
    if x.shape[1] != d:
        raise ValueError(f"vectors have {x.shape[1]} dimensions; the index has {d}")
    if metric == "cosine":
        faiss.normalize_L2(x)
    return x


class FaissRetriever:
    """Nearest catalogue items for query vectors; ``search`` returns (scores, item rows)."""

    def __init__(self, config: RetrieverConfig, index: faiss.Index, item_ids: np.ndarray) -> None:
        if index.ntotal != len(item_ids):
            raise ValueError(f"index holds {index.ntotal} vectors but {len(item_ids)} item ids were given")
        self.config = config
        self.index = index
        self.item_ids = np.asarray(item_ids, dtype=str)

    @property
    def dim(self) -> int:
        return self.index.d

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        return _prepare(x, self.index.d, self.config.metric)

    @classmethod
    def build(cls, vectors: np.ndarray, item_ids: np.ndarray, config: RetrieverConfig | None = None) -> FaissRetriever:
        """Index (n_items, d) vectors."""
        config = config or RetrieverConfig()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(item_ids) or len(vectors) == 0:
            raise ValueError(f"need (n_items, d) vectors for {len(item_ids)} items; got {vectors.shape}")
        d = vectors.shape[1]
        if config.resolved_type(len(vectors)) == "flat":
            index: faiss.Index = faiss.IndexFlatIP(d)
        else:
            index = faiss.IndexHNSWFlat(d, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = config.hnsw_ef_construction
            index.hnsw.efSearch = config.hnsw_ef_search
        index.add(_prepare(vectors, d, config.metric))
        return cls(config, index, item_ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(B, d) queries → ((B, k) similarities, (B, k) item rows); rows are -1 where fewer than k exist."""
        if k < 1:
            raise ValueError("k must be >= 1")
        return self.index.search(self._prepare(queries), min(k, self.index.ntotal))

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_json(directory / "config.json", config_to_dict(self.config))
        faiss.write_index(self.index, str(directory / "items.faiss"))
        np.savez(directory / "item_ids.npz", item_ids=self.item_ids)

    @classmethod
    def load(cls, directory: Path) -> FaissRetriever:
        directory = Path(directory)
        config = config_from_dict(RetrieverConfig, read_json(directory / "config.json"), source=str(directory))
        index = faiss.read_index(str(directory / "items.faiss"))
        with np.load(directory / "item_ids.npz", allow_pickle=False) as f:
            item_ids = f["item_ids"]
        return cls(config, index, item_ids)
