"""What the storefront shows a shopper: the set of their experiment variant, with the exposure recorded.

The image-set endpoint asks :class:`Storefront` for a shopper's set. Without a running experiment for the
shopper's unit it is the Personaliser's set, as before. When an experiment is running (at the request time,
``at``) and the unit falls in its traffic share, the unit's variant decides what is shown:

- strategy ``personalised``: the Personaliser's generated set (session fold-in included);
- strategy ``popular``: :func:`popular_set`, real catalogue photos of the most popular items, the same for
  everyone (the catalogue's own images, no generation);

and the exposure (experiment, variant, bundle version, the image ids shown) is written to the event store
before the set is returned, so the report counts exactly the sets shoppers received.

Which experiment: the one named by the request, else the running experiments in name order, the first whose
traffic share holds the unit. A unit is therefore in at most one experiment per request (experiments do not
overlap on the image set; give them disjoint traffic or run them one after the other).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import sqlalchemy as sa

from engine.experiments.assignment import assign, record_exposure, unit_id_for
from engine.experiments.definition import Experiment
from engine.experiments.eventstore import EventStore, to_epoch
from engine.experiments.manager import ExperimentRegistry, UnknownExperiment
from engine.serving.personaliser import ImageSet, NearestItem, Personaliser
from engine.serving.state import ServingState

logger = logging.getLogger(__name__)

#: Prefix of the image id of a catalogue photo shown in a popular set (``catalogue.<item_id>``).
CATALOGUE_IMAGE_PREFIX = "catalogue."


@dataclass(frozen=True, kw_only=True)
class CatalogueImage:
    """A real catalogue photo in a popular set: its item, its condition (the item's attributes), the item's
    share of catalogue popularity, and the items to "shop similar" (the item itself first, then its visually
    nearest catalogue items by the bundle's image features)."""

    item_id: str
    slot: int
    condition: dict[str, str]
    score: float
    nearest: list[NearestItem]

    @property
    def image_id(self) -> str:
        return CATALOGUE_IMAGE_PREFIX + self.item_id


@dataclass(frozen=True, kw_only=True)
class PopularSet:
    """The control arm's set: catalogue photos of popular items (see :func:`popular_set`)."""

    user_id: str
    bundle_version: str
    images: list[CatalogueImage]
    strategy: str = "popular"


@dataclass(frozen=True, kw_only=True)
class ShownSet:
    """What a shopper was shown: the set, and the experiment and variant behind it (None: no experiment)."""

    images: ImageSet | PopularSet
    experiment: str | None = None
    variant: str | None = None
    exposure_id: str | None = None

    @property
    def image_ids(self) -> list[str]:
        return [img.image_id for img in self.images.images]


def popular_items(
    personaliser: Personaliser, n: int, *, classes: tuple[str, ...] | None = None, in_stock_only: bool = True
) -> list[str]:
    """The ``n`` most popular catalogue items that have a photo on disk and pass the catalogue filters (in
    stock, class allowed), one per (class, colour, pattern, …) condition while distinct conditions last,
    then the next most popular ones. Ties keep catalogue order."""
    catalogue = personaliser.bundle.catalogue
    popularity = catalogue["popularity"].to_numpy(dtype=np.float64)
    allowed = personaliser.allowed_classes(classes)
    keep = np.ones(len(catalogue), dtype=bool)
    if allowed is not None:
        keep &= catalogue[personaliser.bundle.attributes[0]].astype(str).isin(allowed).to_numpy()
    if in_stock_only and "in_stock" in catalogue.columns:
        keep &= catalogue["in_stock"].to_numpy(dtype=bool)
    order = np.argsort(-popularity, kind="stable")
    order = order[keep[order]]
    codes = personaliser.bundle.codes
    chosen: list[int] = []
    spare: list[int] = []
    seen: set[tuple[int, ...]] = set()
    item_ids = catalogue["item_id"].to_numpy(dtype=str)
    for row in order:
        if len(chosen) >= n:
            break
        if personaliser.item_image_path(item_ids[row]) is None:
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
    return [str(item_ids[r]) for r in chosen]


def similar_items(
    personaliser: Personaliser, item_id: str, k: int, *, classes: tuple[str, ...] | None = None
) -> list[NearestItem]:
    """The item itself (similarity 1) then its k − 1 visually nearest catalogue items (FAISS, the vectors the
    index already holds), of the allowed ``classes`` only when given."""
    retriever = personaliser.bundle.retriever
    rows = np.flatnonzero(retriever.item_ids == item_id)
    out = [_nearest(personaliser, item_id, 1.0)]
    if k < 2 or rows.size == 0:
        return out
    vector = retriever.stored_vector(int(rows[0]))[None, :]
    # a class filter discards neighbours, so look further (the index is exact or well calibrated either way)
    depth = k + 1 if classes is None else 10 * (k + 1)
    sims, found = retriever.index.search(vector, min(depth, retriever.index.ntotal))
    for s, r in zip(sims[0], found[0], strict=True):
        if r < 0 or str(retriever.item_ids[r]) == item_id:
            continue
        near = _nearest(personaliser, str(retriever.item_ids[r]), float(s))
        if classes is not None and near.attributes[personaliser.bundle.attributes[0]] not in classes:
            continue
        out.append(near)
        if len(out) == k:
            break
    return out


def _nearest(personaliser: Personaliser, item_id: str, similarity: float) -> NearestItem:
    item = personaliser.item(item_id)
    assert item is not None, item_id
    return NearestItem(item_id=item_id, similarity=similarity, attributes=item["attributes"], price=item["price"])


def popular_set(
    personaliser: Personaliser,
    user_id: str,
    n: int,
    *,
    neighbours: int,
    classes: tuple[str, ...] | None = None,
    in_stock_only: bool = True,
) -> PopularSet:
    """The control arm's set (:func:`popular_items`), each photo with its "shop similar" items."""
    total = float(personaliser.bundle.catalogue["popularity"].sum()) or 1.0
    images = []
    for slot, item_id in enumerate(popular_items(personaliser, n, classes=classes, in_stock_only=in_stock_only)):
        item = personaliser.item(item_id)
        assert item is not None
        images.append(
            CatalogueImage(
                item_id=item_id,
                slot=slot,
                condition=item["attributes"],
                score=item["popularity"] / total,
                nearest=similar_items(personaliser, item_id, neighbours, classes=classes),
            )
        )
    return PopularSet(user_id=user_id, bundle_version=personaliser.version, images=images)


class Storefront:
    """Image sets with experiments: see the module docstring. Holds the serving state and the event store
    (None: experiments are off and every shopper gets the Personaliser's set)."""

    def __init__(self, serving: ServingState, store: EventStore | None, *, cache_size: int = 64) -> None:
        self.serving = serving
        self.store = store
        self._popular: OrderedDict[tuple, list[CatalogueImage]] = OrderedDict()
        self._lock = threading.Lock()
        self._cache_size = cache_size

    def popular(
        self,
        user_id: str,
        n: int,
        *,
        neighbours: int,
        classes: tuple[str, ...] | None = None,
        in_stock_only: bool = True,
    ) -> PopularSet:
        """:func:`popular_set`, cached per (bundle, n, neighbours, filters): it is the same for every shopper."""
        personaliser = self.serving.personaliser
        classes = personaliser.allowed_classes(classes)
        key = (personaliser.version, n, neighbours, classes, in_stock_only)
        with self._lock:
            images = self._popular.get(key)
        if images is None:
            images = popular_set(
                personaliser, user_id, n, neighbours=neighbours, classes=classes, in_stock_only=in_stock_only
            ).images
            with self._lock:
                self._popular[key] = images
                while len(self._popular) > self._cache_size:
                    self._popular.popitem(last=False)
        return PopularSet(user_id=user_id, bundle_version=personaliser.version, images=images)

    def running_experiments(self, at: float, name: str | None = None) -> list[Experiment]:
        """The experiment ``name`` (UnknownExperiment if there is none) or every experiment, running at ``at``."""
        if self.store is None:
            if name is not None:
                raise UnknownExperiment(f"no experiment named {name!r}: the event store is unavailable")
            return []
        registry = ExperimentRegistry(self.store)
        experiments = [registry.get(name)] if name is not None else registry.list()
        return [e for e in experiments if e.is_running(at)]

    def image_set(
        self,
        user_id: str,
        n: int,
        *,
        neighbours: int,
        session_id: str | None = None,
        at: datetime | float | None = None,
        experiment: str | None = None,
        exposure_id: str | None = None,
        classes: tuple[str, ...] | None = None,
        in_stock_only: bool = True,
    ) -> ShownSet:
        """The set to show ``user_id`` at ``at`` (default now), recording the exposure when an experiment
        applies. ``exposure_id`` makes a retried request record its exposure once. The catalogue filters
        (``classes``, ``in_stock_only``) apply to every arm alike. ValueError names an unknown class."""
        ts = to_epoch(at)
        filters = {"classes": self.serving.personaliser.allowed_classes(classes), "in_stock_only": in_stock_only}
        exposure_id = exposure_id or uuid.uuid4().hex
        try:
            candidates = self.running_experiments(ts, experiment)
        except sa.exc.SQLAlchemyError as exc:  # the set keeps serving when the store fails
            logger.error("experiments unavailable, serving the default set: %s", exc)
            candidates = []
        for exp in candidates:
            unit = unit_id_for(exp, user_id=user_id, session_id=session_id)
            if unit is None:
                continue
            try:
                chosen = self.store.assignment(exp.name, unit) or assign(exp, unit)  # type: ignore[union-attr]
                if chosen is None:
                    continue
                shown = self._variant_set(
                    exp, chosen, user_id, n, neighbours=neighbours, session_id=session_id, **filters
                )
                recorded = self._record(exp, unit, shown, ts, user_id, session_id, exposure_id)
                if recorded is not None and recorded != chosen:
                    # another worker recorded this unit's first exposure in between, with another variant
                    # (the configuration changed meanwhile): show and record what it recorded
                    logger.warning("unit %s of %s: recorded variant %s, not %s", unit, exp.name, recorded, chosen)
                    shown = self._variant_set(
                        exp, recorded, user_id, n, neighbours=neighbours, session_id=session_id, **filters
                    )
                    self._record(exp, unit, shown, ts, user_id, session_id, None)
                    chosen = recorded
                if recorded is None:  # not running any more at ``ts``: nothing recorded
                    continue
            except sa.exc.SQLAlchemyError as exc:
                logger.error("could not record the exposure of %s in %s, serving the default: %s", unit, exp.name, exc)
                break
            return ShownSet(images=shown, experiment=exp.name, variant=chosen, exposure_id=exposure_id)
        return ShownSet(
            images=self.serving.image_set(user_id, n, neighbours=neighbours, session_id=session_id, **filters)
        )

    def _variant_set(
        self,
        exp: Experiment,
        variant: str,
        user_id: str,
        n: int,
        *,
        neighbours: int,
        session_id: str | None,
        classes: tuple[str, ...] | None,
        in_stock_only: bool,
    ) -> ImageSet | PopularSet:
        strategy = exp.variant(variant).strategy
        if strategy == "popular":
            return self.popular(user_id, n, neighbours=neighbours, classes=classes, in_stock_only=in_stock_only)
        if strategy == "personalised":
            return self.serving.image_set(
                user_id, n, neighbours=neighbours, session_id=session_id, classes=classes, in_stock_only=in_stock_only
            )
        raise ValueError(f"experiment {exp.name!r}, variant {variant!r}: the storefront cannot show {strategy!r}")

    def _record(
        self,
        exp: Experiment,
        unit: str,
        shown: ImageSet | PopularSet,
        ts: float,
        user_id: str,
        session_id: str | None,
        exposure_id: str | None,
    ) -> str | None:
        assert self.store is not None
        return record_exposure(
            self.store,
            exp,
            unit,
            ts=ts,
            user_id=user_id,
            session_id=session_id,
            bundle_version=shown.bundle_version,
            image_ids=[img.image_id for img in shown.images],
            exposure_id=exposure_id,
        )


def sample_users(personaliser: Personaliser, k: int) -> list[str]:
    """The first ``k`` shoppers the serving model knows (for the demo page's user picker)."""
    ids: Sequence[str] = personaliser.bundle.embeddings.user_ids
    return [str(u) for u in ids[:k]]
