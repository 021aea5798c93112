"""Readers: each returns a :class:`features.schema.StoreData` in the common schema."""

from pathlib import Path

from features.readers.demo import read_demo_store
from features.readers.hm import read_hm
from features.readers.service import ServiceEvents, merge_events, service_events
from features.schema import StoreData

__all__ = ["ServiceEvents", "merge_events", "read_demo_store", "read_hm", "read_store", "service_events"]


def read_store(path: Path) -> StoreData:
    """Read a data folder of any supported layout, told apart by the files it holds."""
    path = Path(path)
    if (path / "store.json").is_file():
        return read_demo_store(path)
    if (path / "articles.parquet").is_file() or (path / "articles.csv").is_file():
        return read_hm(path)
    raise FileNotFoundError(
        f"{path} holds no known data layout: a demo store has store.json (make one with "
        "`vitrine data demo --out DIR`), an H&M folder has articles.parquet and transactions*.parquet "
        "(or the competition's CSV files)."
    )
