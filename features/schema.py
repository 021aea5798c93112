"""The common shape of a shop's data, whatever format it was read from.

Every reader in ``features`` returns a :class:`StoreData`: an event log and a catalogue with the same
columns, so that everything downstream (weighting, matrices, splits, training) is written once.

Event log columns (one row per shopper action):

==============  ==============================================================
``user_id``     str, the shopper (a customer id, or ``anon:<session>``)
``session_id``  str, the browsing session the event belongs to
``item_id``     str, a catalogue item
``event_type``  one of :data:`EVENT_TYPES`
``timestamp``   ``datetime64[ns, UTC]``
==============  ==============================================================

An event log may also carry ``price`` (float, the price paid; NaN where unknown) and ``channel`` (str, where
the event happened, such as ``online`` or ``store``; empty where unknown).

Catalogue columns: ``item_id`` (str, unique), one str column per conditioning attribute (named in
``StoreData.attributes``, e.g. ``class``, ``colour``, ``pattern``), ``price`` (float, may be NaN) and
``image`` (path of the item's image relative to ``StoreData.image_root``, empty when it has none) and
``group`` (the item's product family — variants of one product, such as H&M's product_code — empty
when unknown). A catalogue may also carry ``in_stock`` (bool): items that cannot be sold now are False, and
serving's in-stock filter leaves them out; without the column every item counts as in stock.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from features.validation import ValidationReport

EVENT_TYPES: tuple[str, ...] = ("view", "add_to_cart", "purchase")
EVENT_COLUMNS: tuple[str, ...] = ("user_id", "session_id", "item_id", "event_type", "timestamp")
CATALOGUE_BASE_COLUMNS: tuple[str, ...] = ("item_id", "price", "image")


@dataclass(frozen=True, kw_only=True)
class StoreData:
    """A shop's logs and catalogue in the common schema, with what validation found.

    ``attributes`` names the catalogue columns that the generator conditions on, the first being the
    product class. ``image_root`` is where the catalogue's ``image`` paths are resolved.
    """

    name: str
    events: pd.DataFrame
    catalogue: pd.DataFrame
    attributes: tuple[str, ...]
    image_root: Path | None
    reports: dict[str, ValidationReport] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.attributes:
            raise ValueError("StoreData needs at least one conditioning attribute (the product class).")
        missing = [c for c in (*CATALOGUE_BASE_COLUMNS, *self.attributes) if c not in self.catalogue.columns]
        if missing:
            raise ValueError(f"catalogue lacks columns {missing}; readers must produce the common schema.")
        if "in_stock" in self.catalogue.columns and not pd.api.types.is_bool_dtype(self.catalogue["in_stock"]):
            raise ValueError("catalogue in_stock must be a boolean column; readers must produce the common schema.")
        missing = [c for c in EVENT_COLUMNS if c not in self.events.columns]
        if missing:
            raise ValueError(f"event log lacks columns {missing}; readers must produce the common schema.")

    def fingerprint(self) -> str:
        """A short content hash of the loaded events and catalogue, recorded in every artifact manifest."""
        h = hashlib.sha256()
        for frame in (self.events, self.catalogue):
            h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
        return h.hexdigest()[:16]
