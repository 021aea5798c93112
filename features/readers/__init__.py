"""Readers: each returns a :class:`features.schema.StoreData` in the common schema."""

import dataclasses
from pathlib import Path

from features.pseudonyms import Pseudonymiser, pseudonymise_column
from features.readers.demo import read_demo_store
from features.readers.hm import read_hm
from features.readers.service import ServiceEvents, merge_events, service_events
from features.schema import StoreData

__all__ = ["ServiceEvents", "merge_events", "read_demo_store", "read_hm", "read_store", "service_events"]


def read_store(path: Path, *, pseudonyms: Pseudonymiser | None = None) -> StoreData:
    """Read a data folder of any supported layout, told apart by the files it holds.

    With ``pseudonyms``, the shop's shopper ids are replaced by their pseudonyms as they are read, so nothing
    downstream (matrices, bundles, reports) ever holds one (see :mod:`features.pseudonyms`).
    """
    path = Path(path)
    if (path / "store.json").is_file():
        return _pseudonymised(read_demo_store(path), pseudonyms)
    if (path / "articles.parquet").is_file() or (path / "articles.csv").is_file():
        return _pseudonymised(read_hm(path), pseudonyms)
    raise FileNotFoundError(
        f"{path} holds no known data layout: a demo store has store.json (make one with "
        "`vitrine data demo --out DIR`), an H&M folder has articles.parquet and transactions*.parquet "
        "(or the competition's CSV files)."
    )


def _pseudonymised(store: StoreData, pseudonyms: Pseudonymiser | None) -> StoreData:
    if pseudonyms is None:
        return store
    events = store.events.assign(user_id=pseudonymise_column(store.events["user_id"], pseudonyms))
    return dataclasses.replace(store, events=events)
