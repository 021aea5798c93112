"""A FAISS index from vectors to catalogue item ids.

The index type follows the catalogue's size: exact inner-product search (``flat``) while it is cheap,
an inverted file (``ivf``: k-means cells, Jégou et al. 2011) for large catalogues, or HNSW (Malkov &
Yashunin 2018) on request. Vectors are L2-normalised when ``metric="cosine"``, so inner product is cosine
similarity.

IVF's one knob is ``nprobe``, the cells scanned per query. Rather than a constant that suits one data set,
it is calibrated at build time: a sample of the indexed vectors is searched (leaving out each one's own
entry) at nprobe 1, 2, 4, … until recall@10 against exact search reaches ``ivf_target_recall``. Measured on
1M clustered 64-d vectors (``vitrine bench embeddings``); the figures are in
docs/results/2026-11-29-embeddings-speed.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from models.io import config_from_dict, config_to_dict, read_json, write_json

FLAT_MAX_ITEMS = 50_000
INDEX_TYPES = ("auto", "flat", "ivf", "hnsw")


@dataclass(frozen=True, kw_only=True)
class RetrieverConfig:
    index_type: str = "auto"  # "auto" (flat up to FLAT_MAX_ITEMS, then ivf), "flat", "ivf" or "hnsw"
    metric: str = "cosine"  # "cosine" (normalise, inner product) or "ip"
    ivf_cells: int = 0  # k-means cells; 0 = 4·√n (the FAISS wiki's rule of thumb is 4–16·√n)
    ivf_nprobe: int = 0  # cells scanned per query; 0 = calibrate at build time to ivf_target_recall
    ivf_target_recall: float = 0.97  # recall@10 the calibration aims for (a margin over the 0.95 target)
    ivf_calibration_queries: int = 256
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 256

    def __post_init__(self) -> None:
        if self.index_type not in INDEX_TYPES:
            raise ValueError(f"index_type must be one of {INDEX_TYPES}; got {self.index_type!r}")
        if self.metric not in ("cosine", "ip"):
            raise ValueError(f"metric must be 'cosine' or 'ip'; got {self.metric!r}")
        if self.ivf_cells < 0 or self.ivf_nprobe < 0 or not 0 < self.ivf_target_recall <= 1:
            raise ValueError("ivf_cells and ivf_nprobe must be >= 0 and ivf_target_recall in (0, 1]")

    def resolved_type(self, n_items: int) -> str:
        if self.index_type != "auto":
            return self.index_type
        return "flat" if n_items <= FLAT_MAX_ITEMS else "ivf"


def _prepare(x: np.ndarray, d: int, metric: str) -> np.ndarray:
    x = np.array(np.atleast_2d(x), dtype=np.float32, order="C", copy=True)
    if x.shape[1] != d:
        raise ValueError(f"vectors have {x.shape[1]} dimensions; the index has {d}")
    if metric == "cosine":
        faiss.normalize_L2(x)
    return x


def _build_ivf(x: np.ndarray, config: RetrieverConfig) -> faiss.IndexIVFFlat:
    n, d = x.shape
    cells = config.ivf_cells or int(4 * np.sqrt(n))
    cells = max(1, min(cells, n // 39))  # FAISS wants >= 39 training points per centroid
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, cells, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = 1234  # k-means initialisation: the same vectors give the same index
    index.train(x)
    index.add(x)
    index.nprobe = config.ivf_nprobe or calibrate_nprobe(index, x, config)
    return index


def calibrate_nprobe(index: faiss.IndexIVF, x: np.ndarray, config: RetrieverConfig, k: int = 10) -> int:
    """The smallest nprobe in 1, 2, 4, … reaching ``ivf_target_recall`` on three kinds of query at once.

    Queries at serving time need not lie on the items' manifold (generated images' features, user vectors),
    so the calibration asks for the target on (a) indexed vectors, their own entry left out, (b) normalised
    midpoints of random pairs of items, and (c) random directions, the hardest case for an inverted file.
    """
    rng = np.random.default_rng(0)
    m = min(config.ivf_calibration_queries, len(x))
    sample = rng.choice(len(x), m, replace=False)
    midpoints = x[rng.integers(0, len(x), m)] + x[rng.integers(0, len(x), m)]
    directions = rng.standard_normal((m, x.shape[1])).astype(np.float32)
    kinds = []
    for q, own in ((x[sample], sample), (midpoints, None), (directions, None)):
        q = np.ascontiguousarray(q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12), dtype=np.float32)
        kinds.append((q, own))

    def neighbours(q: np.ndarray, own: np.ndarray | None, nprobe: int) -> list[set[int]]:
        index.nprobe = nprobe
        _, found = index.search(q, k + 1)
        if own is None:
            return [set(row[:k].tolist()) - {-1} for row in found]
        return [set(row.tolist()) - {int(s), -1} for row, s in zip(found, own, strict=True)]

    truths = [neighbours(q, own, index.nlist) for q, own in kinds]  # scanning every cell is exact search
    nprobe = 1
    while nprobe < index.nlist:
        recalls = [
            np.mean([len(f & t) / max(len(t), 1) for f, t in zip(neighbours(q, own, nprobe), truth, strict=True)])
            for (q, own), truth in zip(kinds, truths, strict=True)
        ]
        if min(recalls) >= config.ivf_target_recall:
            break
        nprobe = min(2 * nprobe, index.nlist)
    return nprobe


class FaissRetriever:
    """Nearest catalogue items for query vectors; ``search`` returns (scores, item rows)."""

    def __init__(self, config: RetrieverConfig, index: faiss.Index, item_ids: np.ndarray) -> None:
        if index.ntotal != len(item_ids):
            raise ValueError(f"index holds {index.ntotal} vectors but {len(item_ids)} item ids were given")
        self.config = config
        self.index = index
        self.item_ids = np.asarray(item_ids, dtype=str)
        if isinstance(index, faiss.IndexIVF) and not index.direct_map.type:
            # an inverted file gives stored vectors back only through a row -> list map: build it once, here,
            # not lazily under concurrent requests (one int64 per item)
            index.make_direct_map()

    @property
    def dim(self) -> int:
        return self.index.d

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """Queries as the index compares them (unit length for cosine), so their dot products with
        ``stored_vectors`` are the similarities ``search`` reports."""
        return _prepare(x, self.index.d, self.config.metric)

    @classmethod
    def build(cls, vectors: np.ndarray, item_ids: np.ndarray, config: RetrieverConfig | None = None) -> FaissRetriever:
        """Index (n_items, d) vectors."""
        config = config or RetrieverConfig()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(item_ids) or len(vectors) == 0:
            raise ValueError(f"need (n_items, d) vectors for {len(item_ids)} items; got {vectors.shape}")
        d = vectors.shape[1]
        x = _prepare(vectors, d, config.metric)
        kind = config.resolved_type(len(vectors))
        if kind == "flat":
            index: faiss.Index = faiss.IndexFlatIP(d)
            index.add(x)
        elif kind == "ivf":
            index = _build_ivf(x, config)
        else:
            index = faiss.IndexHNSWFlat(d, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = config.hnsw_ef_construction
            index.hnsw.efSearch = config.hnsw_ef_search
            index.add(x)
        return cls(config, index, item_ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(B, d) queries → ((B, k) similarities, (B, k) item rows); rows are -1 where fewer than k exist."""
        if k < 1:
            raise ValueError("k must be >= 1")
        return self.index.search(self.prepare(queries), min(k, self.index.ntotal))

    def search_prepared(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``search`` for (B, d) queries that are already prepared, such as ``stored_vector`` rows."""
        if k < 1:
            raise ValueError("k must be >= 1")
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, self.index.ntotal))

    def stored_vectors(self) -> np.ndarray:
        """(n_items, d): every item's vector as stored (prepared: unit length for cosine)."""
        return self.index.reconstruct_n(0, self.index.ntotal)

    def stored_vector(self, row: int) -> np.ndarray:
        """(d,): one item's vector as stored, the query that finds its nearest items."""
        # faiss's stubs type a call without an output buffer as the torch overload; this faiss (no
        # faiss.contrib.torch_utils imported) returns an ndarray, as reconstruct_n's stub says
        return self.index.reconstruct(int(row))  # type: ignore[return-value]

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
