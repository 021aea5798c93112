"""The serving bundle's catalogue: item lookups, the catalogue filters, and the sets made of real photos.

Everything the service asks of the catalogue goes through :class:`Catalogue`, so no caller reaches into the
bundle's frames or the FAISS index: item metadata and photos, the class filter, per-indexed-item arrays for
grounding, the popular set (the control arm of an experiment) and "shop similar" items.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from engine.artifacts.bundle import Bundle
from engine.serving.types import CatalogueImage, NearestItem, PopularSet


class Catalogue:
    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        cat = bundle.catalogue
        self.attributes: tuple[str, ...] = tuple(bundle.attributes)
        self.rows: dict[str, int] = {item: k for k, item in enumerate(cat["item_id"])}
        self.values = cat[list(self.attributes)].to_numpy(dtype=str)  # (n_items, n_attributes) attribute values
        self.prices = cat["price"].to_numpy(dtype=np.float64)
        self.popularity = cat["popularity"].to_numpy(dtype=np.float64)
        self.has_image = cat["has_image"].to_numpy(dtype=bool)
        self.in_stock = cat["in_stock"].to_numpy(dtype=bool) if "in_stock" in cat.columns else np.ones(len(cat), bool)
        self.item_ids = cat["item_id"].to_numpy(dtype=str)
        # per indexed item (retriever row): its catalogue row, class, stock and condition codes
        retriever = bundle.retriever
        indexed = np.asarray([self.rows[i] for i in retriever.item_ids], dtype=np.int64)
        self.index_rows = indexed
        self.index_class = self.values[indexed, 0] if len(indexed) else np.empty(0, dtype=str)
        self.index_in_stock = self.in_stock[indexed] if len(indexed) else np.empty(0, dtype=bool)
        self.index_codes = bundle.codes[indexed] if len(indexed) else np.empty((0, bundle.codes.shape[1]), np.int64)

    def attributes_of(self, row: int) -> dict[str, str]:
        return dict(zip(self.attributes, self.values[row], strict=True))

    def price_of(self, row: int) -> float | None:
        price = self.prices[row]
        return None if np.isnan(price) else float(price)

    def item(self, item_id: str) -> dict[str, Any] | None:
        """An item's metadata (attributes, price, whether it has a photo, popularity), or None."""
        row = self.rows.get(item_id)
        if row is None:
            return None
        return {
            "item_id": item_id,
            "attributes": self.attributes_of(row),
            "price": self.price_of(row),
            "has_image": bool(self.has_image[row]),
            "popularity": float(self.popularity[row]),
        }

    def nearest_item(self, item_id: str, similarity: float, shopper_score: float | None = None) -> NearestItem:
        row = self.rows[item_id]
        return NearestItem(
            item_id=item_id,
            similarity=similarity,
            attributes=self.attributes_of(row),
            price=self.price_of(row),
            shopper_score=shopper_score,
        )

    def image_path(self, item_id: str) -> Path | None:
        """The catalogue photo of an item, if the bundle knows where its images live and the file exists."""
        row = self.rows.get(item_id)
        root = self.bundle.image_root
        if row is None or root is None or not self.has_image[row]:
            return None
        path = root / str(self.bundle.catalogue["image"].iat[row])
        return path if path.is_file() else None

    def allowed_classes(self, classes: list[str] | tuple[str, ...] | set[str] | None) -> tuple[str, ...] | None:
        """The class filter, checked against the catalogue's classes (ValueError naming the unknown ones)."""
        if classes is None:
            return None
        known = self.bundle.encoder.values_[self.attributes[0]]
        unknown = sorted(set(classes) - set(known))
        if unknown or not classes:
            raise ValueError(f"classes: {unknown or 'empty'} not in the catalogue; choose from {sorted(known)}")
        return tuple(sorted(set(classes)))

    def known_users(self, k: int) -> list[str]:
        """The first ``k`` shoppers the serving model knows (for the demo page's user picker)."""
        return [str(u) for u in self.bundle.embeddings.user_ids[:k]]

    # ---- sets of real photos ------------------------------------------------------------------------
    def popular_items(self, n: int, *, classes: tuple[str, ...] | None = None, in_stock_only: bool = True) -> list[str]:
        """The ``n`` most popular catalogue items that have a photo on disk and pass the catalogue filters (in
        stock, class allowed), one per (class, colour, pattern, …) condition while distinct conditions last,
        then the next most popular ones. Ties keep catalogue order."""
        allowed = self.allowed_classes(classes)
        keep = np.ones(len(self.item_ids), dtype=bool)
        if allowed is not None:
            keep &= np.isin(self.values[:, 0], allowed)
        if in_stock_only:
            keep &= self.in_stock
        order = np.argsort(-self.popularity, kind="stable")
        order = order[keep[order]]
        codes = self.bundle.codes
        chosen: list[int] = []
        spare: list[int] = []
        seen: set[tuple[int, ...]] = set()
        for row in order:
            if len(chosen) >= n:
                break
            if self.image_path(self.item_ids[row]) is None:
                continue
            key = tuple(int(c) for c in codes[row])
            if key in seen:
                if len(spare) < n:
                    spare.append(int(row))
                continue
            seen.add(key)
            chosen.append(int(row))
        chosen += spare[: n - len(chosen)]
        if not chosen:
            raise ValueError("no catalogue item with a photo on disk passes the filters (in stock, classes)")
        return [str(self.item_ids[r]) for r in chosen]

    def similar_items(self, item_id: str, k: int, *, classes: tuple[str, ...] | None = None) -> list[NearestItem]:
        """The item itself (similarity 1) then its k − 1 visually nearest catalogue items (FAISS, the vectors the
        index already holds), of the allowed ``classes`` only when given."""
        retriever = self.bundle.retriever
        rows = np.flatnonzero(retriever.item_ids == item_id)
        out = [self.nearest_item(item_id, 1.0)]
        if k < 2 or rows.size == 0:
            return out
        vector = retriever.stored_vector(int(rows[0]))[None, :]
        # a class filter discards neighbours, so look further (the index is exact or well calibrated either way)
        depth = k + 1 if classes is None else 10 * (k + 1)
        sims, found = retriever.search_prepared(vector, depth)
        for s, r in zip(sims[0], found[0], strict=True):
            if r < 0 or str(retriever.item_ids[r]) == item_id:
                continue
            near = self.nearest_item(str(retriever.item_ids[r]), float(s))
            if classes is not None and near.attributes[self.attributes[0]] not in classes:
                continue
            out.append(near)
            if len(out) == k:
                break
        return out

    def popular_set(
        self,
        user_id: str,
        n: int,
        *,
        neighbours: int,
        classes: tuple[str, ...] | None = None,
        in_stock_only: bool = True,
    ) -> PopularSet:
        """The control arm's set (:meth:`popular_items`), each photo with its "shop similar" items."""
        total = float(self.popularity.sum()) or 1.0
        images = []
        for slot, item_id in enumerate(self.popular_items(n, classes=classes, in_stock_only=in_stock_only)):
            row = self.rows[item_id]
            images.append(
                CatalogueImage(
                    item_id=item_id,
                    slot=slot,
                    condition=self.attributes_of(row),
                    score=float(self.popularity[row]) / total,
                    nearest=self.similar_items(item_id, neighbours, classes=classes),
                )
            )
        return PopularSet(user_id=user_id, bundle_version=self.bundle.version, images=images)
