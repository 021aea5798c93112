"""Grounding: the real catalogue items behind each generated image, so every image leads to something buyable.

For each image, the ``grounding_pool``·k nearest catalogue items by image features (FAISS) that pass the
catalogue filters (in stock, class allowed), plus the shopper's best items of the image's condition
(``condition_grounding``: what the image was generated to show, found by attribute rather than by pixels).
The shopper's score picks k per image, each item used once per set and given to the image it resembles
most; they are listed by similarity. The score (:meth:`Grounder.shopper_scores`) puts the bundle's ranker's
candidates first, in its order, then every other item by u · v (or u · f(image) calibrated to the factors'
scale for items without interactions).
"""

from __future__ import annotations

import numpy as np
import torch

from engine.artifacts.bundle import Bundle
from engine.serving.catalogue import Catalogue
from engine.serving.config import PersonaliserConfig
from engine.serving.ranker import Ranking
from engine.serving.types import NearestItem


def cold_calibration(
    user_factors: np.ndarray, item_factors: np.ndarray, visual_vectors: np.ndarray, *, users: int = 512, seed: int = 0
) -> tuple[float, float]:
    """(a, b) so that a · (u · f(image)) + b estimates u · v, fitted by least squares over the items that have both
    factors v and an image vector f(image), for a sample of shoppers u. Raw u · f(image) is on its own scale
    (on the demo store it put cold items, which no held-out shopper bought, in 12% of the grounded slots); the
    fit maps it to the factors' scale and shrinks it by how well it predicts them."""
    if len(item_factors) < 2 or len(user_factors) == 0:
        return 1.0, 0.0
    rng = np.random.default_rng(seed)
    u = user_factors[rng.choice(len(user_factors), min(users, len(user_factors)), replace=False)]
    x = (u @ visual_vectors.T).ravel().astype(np.float64)
    y = (u @ item_factors.T).ravel().astype(np.float64)
    var = x.var()
    if not np.isfinite(var) or var <= 1e-12:
        return 0.0, float(y.mean())
    slope = float(((x - x.mean()) * (y - y.mean())).mean() / var)
    return slope, float(y.mean() - slope * x.mean())


def distinct_picks(
    scores: list[np.ndarray], similarities: list[np.ndarray], items: list[np.ndarray], k: int
) -> list[np.ndarray]:
    """Per pool, the positions of up to k items. All pools' (pool, item) pairs are taken best shopper score
    first, an item going to the pool (image) it is most similar to among those with room; a pool left short
    then takes its best remaining items, shared or not."""
    if not scores:
        return []
    pool_of = np.concatenate([np.full(len(s), p) for p, s in enumerate(scores)])
    pos = np.concatenate([np.arange(len(s)) for s in scores])
    flat_items = np.concatenate(items)
    order = np.lexsort((-np.concatenate(similarities), -np.concatenate(scores)))
    taken: set[int] = set()
    picks: list[list[int]] = [[] for _ in scores]
    for j in order:
        p, item = int(pool_of[j]), int(flat_items[j])
        if len(picks[p]) < k and item not in taken:
            picks[p].append(int(pos[j]))
            taken.add(item)
    for p, s in enumerate(scores):
        want = min(k, len(s))
        if len(picks[p]) < want:
            rest = [int(i) for i in np.argsort(-s, kind="stable") if int(i) not in picks[p]]
            picks[p].extend(rest[: want - len(picks[p])])
    return [np.asarray(pk, dtype=np.int64) for pk in picks]


def item_space_vectors(bundle: Bundle) -> tuple[np.ndarray, np.ndarray]:
    """Per indexed item, a (d,) item-space vector and a score offset, so that u · vector + offset is the
    shopper's score: its factors (offset 0), or, for an item without interactions, f(image) calibrated to
    the factors' scale (``cold_calibration``). Without a visual encoder such items score 0 (neutral)."""
    emb = bundle.embeddings
    rows = emb.item_indices(list(bundle.retriever.item_ids))
    warm = rows >= 0
    vectors = np.zeros((len(rows), emb.dim), dtype=np.float32)
    offsets = np.zeros(len(rows), dtype=np.float32)
    vectors[warm] = emb.item_factors[rows[warm]]
    if bundle.visual is not None and (~warm).any():
        visual = np.asarray(bundle.visual.item_vectors, dtype=np.float32)
        slope, intercept = cold_calibration(emb.user_factors, emb.item_factors[rows[warm]], visual[warm])
        vectors[~warm] = slope * visual[~warm]
        offsets[~warm] = intercept
    return vectors, offsets


class Grounder:
    """The nearest real catalogue items of generated images, re-ranked for the shopper (see the module)."""

    def __init__(self, bundle: Bundle, catalogue: Catalogue, config: PersonaliserConfig) -> None:
        self.bundle = bundle
        self.catalogue = catalogue
        self.config = config
        attrs = bundle.attributes
        self.match_columns = np.array(
            [k for k, a in enumerate(attrs) if config.condition_attributes is None or a in config.condition_attributes],
            dtype=np.int64,
        )
        # indexed rows per value of the matched attributes, so a pool costs the size of its class, not the catalogue's
        self._condition_rows: dict[tuple[int, ...], np.ndarray] = {}
        matched = catalogue.index_codes[:, self.match_columns]
        if matched.size:
            keys, inverse = np.unique(matched, axis=0, return_inverse=True)
            order = np.argsort(inverse.ravel(), kind="stable")
            bounds = np.cumsum(np.bincount(inverse.ravel(), minlength=len(keys)))[:-1]
            for key, rows in zip(keys, np.split(order, bounds), strict=True):
                self._condition_rows[tuple(int(v) for v in key)] = rows
        # how the explanation names the grounded items: by likeness, and by the matched attributes if any
        shared = " and ".join(attrs[k] for k in self.match_columns)
        by_condition = config.condition_grounding and len(self.match_columns)
        self.basis = f"that look like it or share its {shared}" if by_condition else "that look like it"
        # the retriever's vectors, for the similarity of condition-matched items (n_indexed × feature_dim floats)
        self.index_features = bundle.retriever.stored_vectors() if config.condition_grounding else None
        self.index_vectors, self.index_offsets = item_space_vectors(bundle)
        self._index_rows = {str(item): k for k, item in enumerate(bundle.retriever.item_ids)}

    def shopper_scores(self, user_vector: np.ndarray | None, ranking: Ranking | None) -> np.ndarray | None:
        """(n_indexed,) the shopper's score of every indexed item, or None without a vector or a ranking.

        Without a ranking: u · v (u · f(image) calibrated, for items without interactions). With one, the
        ranker's candidates come first, in its order, with scores in (1, 2]; every other item keeps the order
        of u · v, squashed into (0, 1) (0.5 for all without a vector)."""
        base = None
        if user_vector is not None:
            base = self.index_vectors @ np.asarray(user_vector, dtype=np.float32) + self.index_offsets
        if ranking is None:
            return base
        out = 0.5 * np.ones(len(self._index_rows)) if base is None else 1.0 / (1.0 + np.exp(-base.astype(np.float64)))
        rows = np.array([self._index_rows.get(str(i), -1) for i in ranking.item_ids], dtype=np.int64)
        position = np.flatnonzero(rows >= 0)
        out[rows[position]] = 2.0 - position / max(len(rows), 1)
        return out

    def _with_condition_items(
        self,
        pool: tuple[np.ndarray, np.ndarray],
        query: np.ndarray,
        condition: np.ndarray,
        keep: np.ndarray,
        shopper: np.ndarray,
        want: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The pool plus the shopper's best ``want`` items of the image's condition, with their similarity to
        ``query`` (the image's feature as the retriever prepares it)."""
        key = tuple(int(v) for v in condition[self.match_columns])
        same = self._condition_rows.get(key, np.empty(0, dtype=np.int64))
        same = same[keep[same]]
        same = same[~np.isin(same, pool[1])]
        if len(same) == 0 or self.index_features is None:
            return pool
        if len(same) > want:
            same = same[np.argpartition(-shopper[same], want - 1)[:want]]
        sims = self.index_features[same] @ query
        srow, irow = np.concatenate([pool[0], sims]), np.concatenate([pool[1], same])
        order = np.argsort(-srow, kind="stable")
        return srow[order], irow[order]

    def _filter(self, classes: tuple[str, ...] | None, in_stock_only: bool) -> np.ndarray:
        keep = np.ones(len(self.bundle.retriever), dtype=bool)
        if in_stock_only:
            keep &= self.catalogue.index_in_stock
        if classes is not None:
            keep &= np.isin(self.catalogue.index_class, classes)
        if not keep.any():
            raise ValueError("no catalogue item passes the filters (in stock, classes)")
        return keep

    @torch.inference_mode()
    def nearest_items(
        self,
        images: torch.Tensor | None,  # (B, C, H, W) in [-1, 1]; or None with ``features``
        k: int,
        *,
        features: np.ndarray | None = None,  # (B, feature_dim) unit image features, instead of images
        user_vector: np.ndarray | None = None,
        ranking: Ranking | None = None,
        classes: tuple[str, ...] | None = None,
        in_stock_only: bool = True,
        distinct: bool = False,
        conditions: np.ndarray | None = None,  # (B, n_attributes) codes each image was generated for
    ) -> list[list[NearestItem]]:
        """The k nearest catalogue items of each image by image features, after the catalogue filters.

        With a shopper vector or ranking, the ``grounding_pool``·k nearest that pass the filters are re-ranked
        by the shopper's score (:meth:`shopper_scores`) and the best k kept; they are
        listed by similarity, most similar first. ``distinct`` (with a shopper vector) keeps the images' items
        apart: (image, item) pairs of all pools are taken best shopper score first, each item by one image
        only, until every image has k; an image whose pool runs dry keeps its best items even if shared.
        ``conditions`` (with a shopper vector) adds to each image's pool the shopper's best ``grounding_pool``·k
        items of exactly the image's condition: the real products of what the image was generated to show,
        however the generator rendered it.
        """
        if features is None:
            if images is None:
                raise ValueError("give images or their features")
            feats = self.bundle.classifier.features(images).numpy()
        else:
            feats = features
        retriever = self.bundle.retriever
        total = len(retriever)
        keep = self._filter(classes, in_stock_only)
        shopper = self.shopper_scores(user_vector, ranking)
        want = k * self.config.grounding_pool if shopper is not None else k
        want = min(want, int(keep.sum()))
        search = min(total, max(want, k) * (1 if keep.all() else 4))
        while True:
            sims, rows = retriever.search(feats, search)
            enough = all(int(keep[r[r >= 0]].sum()) >= want for r in rows)
            if enough or search >= total:
                break
            search = min(total, search * 4)
        pools = []
        for srow, irow in zip(sims, rows, strict=True):
            ok = (irow >= 0) & keep[np.maximum(irow, 0)]
            pools.append((srow[ok][:want], irow[ok][:want]))
        if conditions is not None and shopper is not None and len(self.match_columns):
            queries = retriever.prepare(feats)
            pools = [
                self._with_condition_items(pool, query, cond, keep, shopper, want)
                for pool, query, cond in zip(pools, queries, conditions, strict=True)
            ]
        if shopper is None:
            picks = [np.arange(min(k, len(irow))) for _, irow in pools]
        elif distinct:
            picks = distinct_picks(
                [shopper[irow] for _, irow in pools], [srow for srow, _ in pools], [irow for _, irow in pools], k
            )
        else:
            picks = [np.argsort(-shopper[irow], kind="stable")[:k] for _, irow in pools]
        out = []
        for (srow, irow), pick in zip(pools, picks, strict=True):
            pick = np.sort(pick)  # in similarity order
            srow, irow = srow[pick], irow[pick]
            out.append(
                [
                    self.catalogue.nearest_item(
                        str(retriever.item_ids[r]), float(s), None if shopper is None else float(shopper[r])
                    )
                    for s, r in zip(srow[:k], irow[:k], strict=True)
                ]
            )
        return out
