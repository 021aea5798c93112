"""Reader for the embedded demo store written by ``vitrine data demo``.

Layout: ``store.json``, ``catalogue.csv`` (item_id,class,colour,pattern,price,image; optionally in_stock,
true or false, which the generated demo store does not write), ``images/``, ``events.csv``
(user_id,session_id,item_id,event_type,timestamp). ``hidden/`` holds the simulated shoppers' tastes for
evaluation; this reader never opens it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from features.schema import EVENT_TYPES, StoreData
from features.validation import validate_catalogue, validate_events

logger = logging.getLogger(__name__)

DEMO_ATTRIBUTES: tuple[str, ...] = ("class", "colour", "pattern")


def read_demo_store(path: Path) -> StoreData:
    """Read a demo store folder; bad rows are counted in ``StoreData.reports``, the rest loads."""
    path = Path(path)
    meta_path = path / "store.json"
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{path} is not a demo store (no store.json); create one with `vitrine data demo --out {path}`."
        )
    meta = json.loads(meta_path.read_text())
    attributes = tuple(meta.get("attributes", DEMO_ATTRIBUTES))
    raw_cat = pd.read_csv(path / "catalogue.csv", dtype=str, keep_default_na=False)
    catalogue, cat_report = validate_catalogue(raw_cat, source=str(path / "catalogue.csv"), attributes=attributes)
    raw_ev = pd.read_csv(path / "events.csv", dtype=str, keep_default_na=False)
    events, ev_report = validate_events(
        raw_ev,
        source=str(path / "events.csv"),
        event_types=EVENT_TYPES,
        known_items=pd.Index(catalogue["item_id"]),
    )
    for report in (cat_report, ev_report):
        report.log()
    return StoreData(
        name=str(meta.get("name", "vitrine-demo")),
        events=events,
        catalogue=catalogue,
        attributes=attributes,
        image_root=path,
        reports={"catalogue": cat_report, "events": ev_report},
    )
