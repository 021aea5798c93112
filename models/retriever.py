"""A FAISS index from vectors to catalogue item ids.

The index type follows the catalogue's size (``index_type="auto"``), because what a large catalogue runs out
of first is memory, and each type costs a different number of bytes per item (d = the vectors' dimension;
the figures for d = 64 are measured in docs/results/2026-12-01-index-scale.md):

- ``flat``: exact inner-product search, 4·d bytes per item. Every query reads every vector, so it is kept for
  catalogues up to ``flat_max_items`` (50k: about a millisecond per query at d = 64).
- ``ivf`` (IVF-Flat: k-means cells, Jégou et al. 2011): a query scans only ``nprobe`` cells, but the index
  still holds every float, 4·d + 16 bytes per item (the vector, its id, and the row → list map that gives
  vectors back). Kept while that fits in ``ivf_flat_max_bytes`` (512 MiB: about 2M items at d = 64), since
  every API worker loads its own copy.
- ``ivfpq`` (IVF-PQ, Jégou et al. 2011, "Product quantization for nearest neighbor search"): each vector is
  stored as ``pq_m`` one-byte codes of its residual to its cell's centre (d/4 bytes: 16 at d = 64), plus its
  id, about 25 bytes per item in memory. Codes alone cap recall@10 well below the 0.95 target on clustered
  vectors, so by default a shortlist of k × ``pq_refine_factor`` (calibrated) candidates is
  re-ranked by exact inner product over the float vectors (faiss ``IndexRefineFlat``). Those floats are
  memory-mapped from the saved index when it is loaded (``IO_FLAG_MMAP_IFC``): the operating system keeps the
  pages that queries touch, shared by every worker, rather than each worker holding 4·d bytes per item.
- ``hnsw`` (Malkov & Yashunin 2018) on request.

Vectors are L2-normalised when ``metric="cosine"``, so inner product is cosine similarity.

An inverted file's one knob is ``nprobe``, the cells scanned per query. Rather than a constant that suits
one data set, it is calibrated at build time: a sample of queries is searched at nprobe 1, 2, 4, … until
recall@10 against exact search reaches ``ivf_target_recall``. For IVF-PQ, where more cells stop raising recall,
the re-ranked shortlist is widened instead (16·k, 32·k, … 256·k); a warning says so if the target is out of
reach.

A saved retriever is a folder: ``config.json`` (the config it was built with), ``items.faiss``,
``item_ids.npz`` and ``index.json`` (``schema_version`` 2: the resolved index type, items, dimension,
nprobe, IVF-PQ's shortlist factor). Folders written before ``index.json`` existed (schema 1: flat, ivf or
hnsw) are migrated on load by reading the type from the FAISS index itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from models.io import config_from_dict, config_to_dict, read_json, write_json

logger = logging.getLogger(__name__)

FLAT_MAX_ITEMS = 50_000
IVF_FLAT_MAX_BYTES = 512 * 2**20
INDEX_TYPES = ("auto", "flat", "ivf", "ivfpq", "hnsw")
PQ_REFINES = ("exact", "none")
INDEX_SCHEMA_VERSION = 2
PLATEAU = 0.001  # a doubling of nprobe that gains less recall than this gains nothing
DEFAULT_REFINE_FACTOR = 16  # IVF-PQ's re-ranked shortlist, k × this, where calibration starts
MAX_REFINE_FACTOR = 256  # the widest shortlist calibration tries (k × 256 exact inner products a query)


def ivf_flat_bytes_per_item(dim: int) -> int:
    """Memory of one item in an IVF-Flat index: its float vector, its int64 id and its int64 row → list entry."""
    return 4 * dim + 16


def pq_subquantizers(dim: int) -> int:
    """The default ``pq_m``: the largest divisor of ``dim`` up to dim/4, so each one-byte code stands for about
    four dimensions (16 bytes for 64-d vectors); FAISS needs ``pq_m`` to divide the dimension."""
    return max(m for m in range(1, max(1, dim // 4) + 1) if dim % m == 0)


@dataclass(frozen=True, kw_only=True)
class RetrieverConfig:
    index_type: str = "auto"  # "auto" (by size: see resolved_type), "flat", "ivf" (IVF-Flat), "ivfpq" or "hnsw"
    metric: str = "cosine"  # "cosine" (normalise, inner product) or "ip"
    flat_max_items: int = FLAT_MAX_ITEMS  # auto: exact search up to this many items
    ivf_flat_max_bytes: int = IVF_FLAT_MAX_BYTES  # auto: IVF-Flat while n·(4d + 16) fits here, IVF-PQ above
    ivf_cells: int = 0  # k-means cells; 0 = 4·√n (the FAISS wiki's rule of thumb is 4–16·√n)
    ivf_nprobe: int = 0  # cells scanned per query; 0 = calibrate at build time to ivf_target_recall
    ivf_target_recall: float = 0.97  # recall@10 the calibration aims for (a margin over the 0.95 target)
    ivf_calibration_queries: int = 256
    ivf_train_per_cell: int = 64  # k-means training sample per cell (FAISS advises 30–256): caps training time
    pq_m: int = 0  # IVF-PQ: one-byte codes per vector; 0 = pq_subquantizers(d), d/4 where d allows
    pq_nbits: int = 8  # IVF-PQ: bits per code (256 centroids per sub-space)
    pq_refine: str = "exact"  # IVF-PQ: "exact" re-ranks a shortlist by exact inner product; "none": codes only
    pq_refine_factor: int = 0  # IVF-PQ: the shortlist holds k × this many; 0 = calibrated, from 16, with nprobe
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
        if self.flat_max_items < 0 or self.ivf_flat_max_bytes < 0 or self.ivf_train_per_cell < 39:
            raise ValueError(
                "flat_max_items and ivf_flat_max_bytes must be >= 0 and ivf_train_per_cell >= 39 "
                "(k-means needs 39 points per cell)"
            )
        if self.pq_m < 0 or not 1 <= self.pq_nbits <= 16 or self.pq_refine_factor < 0:
            raise ValueError("pq_m must be >= 0, pq_nbits in 1..16 and pq_refine_factor >= 0 (0: calibrated)")
        if self.pq_refine not in PQ_REFINES:
            raise ValueError(f"pq_refine must be one of {PQ_REFINES}; got {self.pq_refine!r}")

    def resolved_type(self, n_items: int, dim: int) -> str:
        """The index type for ``n_items`` vectors of ``dim`` dimensions: the configured one, or by size for
        "auto": flat up to ``flat_max_items``, IVF-Flat while its memory fits ``ivf_flat_max_bytes``, else IVF-PQ."""
        if self.index_type != "auto":
            return self.index_type
        if n_items <= self.flat_max_items:
            return "flat"
        return "ivf" if n_items * ivf_flat_bytes_per_item(dim) <= self.ivf_flat_max_bytes else "ivfpq"


def _prepare(x: np.ndarray, d: int, metric: str) -> np.ndarray:
    x = np.array(np.atleast_2d(x), dtype=np.float32, order="C", copy=True)
    if x.shape[1] != d:
        raise ValueError(f"vectors have {x.shape[1]} dimensions; the index has {d}")
    if metric == "cosine":
        faiss.normalize_L2(x)
    return x


def _set_clustering(index: faiss.IndexIVF, config: RetrieverConfig) -> None:
    index.cp.seed = 1234  # k-means initialisation: the same vectors give the same index
    index.cp.max_points_per_centroid = config.ivf_train_per_cell  # the cells' training sample, per cell


def _cells(n: int, config: RetrieverConfig) -> int:
    cells = config.ivf_cells or int(4 * np.sqrt(n))
    return max(1, min(cells, n // 39))  # FAISS wants >= 39 training points per centroid


def _build_ivf(x: np.ndarray, config: RetrieverConfig) -> faiss.IndexIVFFlat:
    n, d = x.shape
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, _cells(n, config), faiss.METRIC_INNER_PRODUCT)
    _set_clustering(index, config)
    index.train(x)
    index.add(x)
    index.nprobe = config.ivf_nprobe or calibrate_nprobe(index, x, config)
    return index


def _build_ivfpq(x: np.ndarray, config: RetrieverConfig) -> faiss.Index:
    """IVF-PQ (x: (n, d) prepared vectors), wrapped in an exact re-ranking of its shortlist unless
    ``pq_refine="none"``."""
    n, d = x.shape
    m = config.pq_m or pq_subquantizers(d)
    if d % m:
        raise ValueError(f"pq_m={m} does not divide the vectors' {d} dimensions; pick a divisor or 0 (auto)")
    if n < 2**config.pq_nbits:
        raise ValueError(
            f"IVF-PQ with pq_nbits={config.pq_nbits} trains {2**config.pq_nbits} centroids per sub-space and needs "
            f"at least that many vectors; got {n}: use index_type 'flat' or 'ivf', or lower pq_nbits"
        )
    ivf = faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, _cells(n, config), m, config.pq_nbits, faiss.METRIC_INNER_PRODUCT)
    # polysemous training only serves Hamming pre-filtering, which this index does not use, and is slow
    ivf.do_polysemous_training = False  # type: ignore[attr-defined]  # a field faiss's stubs leave out
    index: faiss.Index = ivf
    if config.pq_refine == "exact":
        index = faiss.IndexRefineFlat(ivf)  # keeps the float vectors beside the codes for the re-ranking
        index.k_factor = float(config.pq_refine_factor or DEFAULT_REFINE_FACTOR)
    _set_clustering(ivf, config)
    index.train(x)  # the cells, then the codebooks on residuals to the cells' centres (seeded by FAISS)
    index.add(x)
    ivf.nprobe = config.ivf_nprobe or calibrate_nprobe(index, x, config)
    return index


def _neighbour_sets(found: np.ndarray, own: np.ndarray | None, k: int) -> list[set[int]]:
    """Rows of (B, k + 1) results as sets of k neighbours: each query's own entry left out where it has one."""
    if own is None:
        return [set(row[:k].tolist()) - {-1} for row in found]
    return [set(row.tolist()[: k + 1]) - {int(s), -1} for row, s in zip(found, own, strict=True)]


def calibrate_nprobe(index: faiss.Index, x: np.ndarray, config: RetrieverConfig, k: int = 10) -> int:
    """The smallest nprobe in 1, 2, 4, … reaching ``ivf_target_recall`` on three kinds of query at once.

    ``index`` is an inverted file (IVF-Flat or IVF-PQ), bare or inside an ``IndexRefine``; ``x`` (n, d) the
    prepared vectors it holds. Queries at serving time need not lie on the items' manifold (generated images'
    features, user vectors), so the calibration asks for the target on (a) indexed vectors, their own entry
    left out, (b) normalised midpoints of random pairs of items, and (c) random directions, the hardest case
    for an inverted file. Recall is against exact search.

    For a re-ranked IVF-PQ with ``pq_refine_factor=0``, a doubling of nprobe that no longer raises recall
    means the shortlist, not the cells, limits it: the shortlist factor (``index.k_factor``, from 16) is then
    doubled, back at the best nprobe so far, up to 256. Where nothing raises recall to the target, the
    setting with the best recall is kept and a warning names the knobs. Sets ``nprobe`` (and ``k_factor``)
    on the index and returns nprobe.
    """
    ivf = faiss.extract_index_ivf(index)
    refine = index if isinstance(index, faiss.IndexRefine) and config.pq_refine_factor == 0 else None
    rng = np.random.default_rng(0)
    m = min(config.ivf_calibration_queries, len(x))
    sample = rng.choice(len(x), m, replace=False)
    midpoints = x[rng.integers(0, len(x), m)] + x[rng.integers(0, len(x), m)]
    directions = rng.standard_normal((m, x.shape[1])).astype(np.float32)
    kinds = []
    for q, own in ((x[sample], sample), (midpoints, None), (directions, None)):
        q = np.ascontiguousarray(q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12), dtype=np.float32)
        kinds.append((q, own))
    truths = [_neighbour_sets(faiss.knn(q, x, k + 1, metric=faiss.METRIC_INNER_PRODUCT)[1], own, k) for q, own in kinds]

    def recall(nprobe: int, factor: float) -> float:
        ivf.nprobe = nprobe
        if refine is not None:
            refine.k_factor = factor
        per_kind = []
        for (q, own), truth in zip(kinds, truths, strict=True):
            found = _neighbour_sets(index.search(q, k + 1)[1], own, k)
            per_kind.append(np.mean([len(f & t) / max(len(t), 1) for f, t in zip(found, truth, strict=True)]))
        return float(min(per_kind))

    nprobe, factor = 1, float(getattr(index, "k_factor", 0.0))
    best, best_at = -1.0, (nprobe, factor)
    while True:
        r = recall(nprobe, factor)
        if r >= config.ivf_target_recall:
            return nprobe
        gained = r > best + PLATEAU
        if gained:
            best, best_at = r, (nprobe, factor)
        if nprobe < ivf.nlist and (gained or isinstance(ivf, faiss.IndexIVFFlat)):
            nprobe = min(2 * nprobe, ivf.nlist)  # IVF-Flat: scanning every cell is exact, so go on to the end
        elif refine is not None and factor < MAX_REFINE_FACTOR and best_at[1] == factor:
            nprobe, factor = best_at[0], 2 * factor  # more cells no longer help: widen the re-ranked shortlist
        else:
            break
    ivf.nprobe, nprobe = best_at[0], best_at[0]
    if refine is not None:
        refine.k_factor = best_at[1]
    logger.warning(
        "recall@%d reaches %.3f at best (nprobe %d of %d cells%s), below the target %.2f: for IVF-PQ raise "
        "pq_m, or use pq_refine='exact' with pq_refine_factor=0 (calibrated); or lower ivf_target_recall",
        k,
        best,
        nprobe,
        ivf.nlist,
        f", shortlist {best_at[1]:g}·k" if refine is not None else "",
        config.ivf_target_recall,
    )
    return nprobe


class _IndexMemory(np.ndarray):
    """An array over memory a FAISS index owns; ``owner`` keeps the index (and so the memory) alive as long as
    the array and its views are."""

    owner: object = None

    def __array_finalize__(self, obj: object) -> None:
        self.owner = getattr(obj, "owner", None)


def index_type_of(index: faiss.Index) -> str:
    """The Vitrine index type a FAISS index is: flat, ivf, ivfpq (bare or with exact re-ranking) or hnsw."""
    if isinstance(index, faiss.IndexRefine):
        index = faiss.downcast_index(index.base_index)
    for cls, name in (
        (faiss.IndexFlat, "flat"),
        (faiss.IndexIVFFlat, "ivf"),
        (faiss.IndexIVFPQ, "ivfpq"),
        (faiss.IndexHNSW, "hnsw"),
    ):
        if isinstance(index, cls):
            return name
    raise ValueError(f"a {type(index).__name__} is not an index type this retriever builds ({INDEX_TYPES[1:]})")


def _read_info(directory: Path) -> dict[str, Any] | None:
    """``index.json`` (schema 2), or None for a schema 1 folder, written before the file existed."""
    if not (directory / "index.json").is_file():
        return None
    info: dict[str, Any] = read_json(directory / "index.json")
    if info.get("schema_version") != INDEX_SCHEMA_VERSION:
        raise ValueError(
            f"{directory}/index.json has schema_version {info.get('schema_version')!r}; this code reads "
            f"{INDEX_SCHEMA_VERSION} (and schema 1 folders, which have no index.json): rebuild the index"
        )
    return info


def _migrate_v1(index: faiss.Index) -> dict[str, Any]:
    """Schema 1 → 2: a schema 1 folder held a flat, IVF-Flat or HNSW index and recorded no type, so the type
    is the FAISS index's own."""
    kind = index_type_of(index)
    if kind not in ("flat", "ivf", "hnsw"):
        raise ValueError(f"a schema 1 index folder cannot hold a {kind} index; it was written by other code")
    return {"schema_version": INDEX_SCHEMA_VERSION, "index_type": kind}


class FaissRetriever:
    """Nearest catalogue items for query vectors; ``search`` returns (scores, item rows)."""

    def __init__(self, config: RetrieverConfig, index: faiss.Index, item_ids: np.ndarray) -> None:
        if index.ntotal != len(item_ids):
            raise ValueError(f"index holds {index.ntotal} vectors but {len(item_ids)} item ids were given")
        self.config = config
        self.index = index
        self.index_type = index_type_of(index)  # what was built, where the config may say "auto"
        self.item_ids = np.asarray(item_ids, dtype=str)
        if isinstance(index, faiss.IndexIVF) and not index.direct_map.type:
            # an inverted file gives stored vectors back only through a row -> list map: build it once, here,
            # not lazily under concurrent requests (one int64 per item). A refined IVF-PQ gives them back from
            # its exact vectors instead.
            index.make_direct_map()

    @property
    def dim(self) -> int:
        return self.index.d

    @property
    def nprobe(self) -> int | None:
        """Cells an inverted file scans per query (None for flat and HNSW)."""
        return None if self.index_type in ("flat", "hnsw") else int(faiss.extract_index_ivf(self.index).nprobe)

    @property
    def refine_factor(self) -> float | None:
        """IVF-PQ's re-ranked shortlist, in multiples of k (None without a re-ranking)."""
        return float(self.index.k_factor) if isinstance(self.index, faiss.IndexRefine) else None

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
        kind = config.resolved_type(len(vectors), d)
        if kind == "flat":
            index: faiss.Index = faiss.IndexFlatIP(d)
            index.add(x)
        elif kind == "ivf":
            index = _build_ivf(x, config)
        elif kind == "ivfpq":
            index = _build_ivfpq(x, config)
        else:
            index = faiss.IndexHNSWFlat(d, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = config.hnsw_ef_construction
            index.hnsw.efSearch = config.hnsw_ef_search
            index.add(x)
        retriever = cls(config, index, item_ids)
        logger.info(
            "indexed %d items × %d dimensions: %s (nprobe %s, shortlist %s·k)",
            len(x),
            d,
            kind,
            retriever.nprobe,
            retriever.refine_factor,
        )
        return retriever

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
        """(n_items, d), read-only: every item's vector as stored (prepared: unit length for cosine). Exact for
        every type but IVF-PQ with ``pq_refine="none"``, whose vectors come back decoded from their codes.

        Where the index keeps the float vectors in one block (flat, and a re-ranked IVF-PQ's exact vectors, which
        a loaded index maps from its file), this is a view of that block, not a copy: every worker of a host then
        shares one copy in the page cache instead of holding n × d floats of its own (2.56 GB at 10M × 64). The
        view keeps the index alive. IVF-Flat and a bare IVF-PQ are copied out (``reconstruct_n``)."""
        index = self.index
        block = faiss.downcast_index(index.refine_index) if isinstance(index, faiss.IndexRefine) else index
        if not isinstance(block, faiss.IndexFlat):
            out = index.reconstruct_n(0, index.ntotal)
            out.flags.writeable = False
            return out
        n, d = int(block.ntotal), int(block.d)
        view = faiss.rev_swig_ptr(block.get_xb(), n * d).reshape(n, d).view(_IndexMemory)
        view.owner = index
        view.flags.writeable = False  # the block may be a read-only mapping of the file
        return view

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
        info = {"schema_version": INDEX_SCHEMA_VERSION, "index_type": self.index_type, "items": len(self)}
        write_json(
            directory / "index.json",
            {**info, "dim": self.dim, "nprobe": self.nprobe, "refine_factor": self.refine_factor},
        )

    @classmethod
    def load(cls, directory: Path) -> FaissRetriever:
        """Read a saved retriever; a refined IVF-PQ's exact vectors stay on disk, memory-mapped."""
        directory = Path(directory)
        config = config_from_dict(RetrieverConfig, read_json(directory / "config.json"), source=str(directory))
        info = _read_info(directory)
        mmap = info is not None and info["index_type"] == "ivfpq"
        index = faiss.read_index(str(directory / "items.faiss"), faiss.IO_FLAG_MMAP_IFC if mmap else 0)
        info = info or _migrate_v1(index)
        if index_type_of(index) != info["index_type"]:
            raise ValueError(
                f"{directory}: index.json says {info['index_type']!r} but items.faiss holds a "
                f"{index_type_of(index)!r} index; the folder was changed after it was saved: rebuild it"
            )
        with np.load(directory / "item_ids.npz", allow_pickle=False) as f:
            item_ids = f["item_ids"]
        return cls(config, index, item_ids)
