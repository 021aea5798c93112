"""The Vitrine API's own events (its event store) as training events in the common schema.

The event store in ``engine.experiments`` reads its events table into a plain frame (one row per stored
event: row_id, client_event_id, kind, user_id, session_id, item_id, image_id, ts in UTC epoch seconds);
this module turns that frame into events in the common schema and validates them row by row, as the file
readers do. It takes a frame, never a database: ``features`` does not know the tables.

Mapping:

- ``view``, ``add_to_cart`` and ``purchase`` become events of the same type on their ``item_id``.
- A ``click`` with an ``item_id`` is a view of that item.
- A ``click`` with only an ``image_id`` (a generated image) is **not used yet**: which items an image
  stood for is known only to the bundle that issued its id, so these clicks are counted and reported,
  never mapped to an item here.
- An event without a ``user_id`` belongs to the shopper ``anon:<session_id>``, as in the common schema; an
  event without a ``session_id`` belongs to the session ``<user_id>:<UTC date>`` (one session per shopper
  and day, as the H&M reader does).
- The same ``client_event_id`` read twice (say from two copies of a store) is kept once and counted.

Bad rows (an item not in the catalogue, a time that is no date, an unusable id) are counted in the report
with their row id and reason; the rest loads.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.schema import EVENT_TYPES, StoreData
from features.validation import ValidationReport, validate_events

logger = logging.getLogger(__name__)

SERVICE_EVENT_COLUMNS: tuple[str, ...] = (
    "row_id",
    "client_event_id",
    "kind",
    "user_id",
    "session_id",
    "item_id",
    "image_id",
    "ts",
)
BAD_TS = "ts is not a time in epoch seconds that a date can hold"


@dataclass(frozen=True, kw_only=True)
class ServiceEvents:
    """The service's events in the common schema, with what was left out and why.

    ``report`` covers the rows that name an item (bad ones counted by reason); ``image_clicks`` counts the
    clicks on generated images, which are not used yet; ``duplicates`` counts repeated client_event_ids.
    """

    events: pd.DataFrame
    report: ValidationReport
    rows_read: int
    image_clicks: int
    duplicates: int

    def counts(self) -> dict[str, int]:
        """The numbers a bundle's manifest records about its service events."""
        return {
            "rows_read": self.rows_read,
            "events_loaded": self.report.rows_loaded,
            "rows_rejected": self.report.rows_rejected,
            "duplicates": self.duplicates,
            "image_clicks_not_used": self.image_clicks,
        }

    def summary(self) -> str:
        return (
            f"{self.report.summary()}; {self.image_clicks:,} clicks on generated images not used yet "
            f"(their items are known only to the bundle that issued the image ids); "
            f"{self.duplicates:,} repeated client_event_ids"
        )


def _present(values: pd.Series) -> np.ndarray:
    return (values.notna() & (values.astype("string").str.strip() != "")).to_numpy(dtype=bool, na_value=False)


def service_events(raw: pd.DataFrame, *, source: str, known_items: pd.Index) -> ServiceEvents:
    """Turn the event store's frame (:data:`SERVICE_EVENT_COLUMNS`) into training events; see the module doc.

    ``known_items`` are the catalogue's item ids: an event on any other item is rejected, as in a file.
    """
    missing = [c for c in SERVICE_EVENT_COLUMNS if c not in raw]
    if missing:
        raise ValueError(f"{source}: missing columns {missing}; service events need {list(SERVICE_EVENT_COLUMNS)}")
    raw = raw.reset_index(drop=True)
    has_id = _present(raw["client_event_id"])
    repeated = has_id & raw["client_event_id"].duplicated(keep="first").to_numpy(dtype=bool)
    kind = raw["kind"].astype("string").str.strip()
    image_click = (kind == "click").to_numpy(dtype=bool, na_value=False) & ~_present(raw["item_id"])
    image_click &= _present(raw["image_id"]) & ~repeated
    rows = raw[~repeated & ~image_click].reset_index(drop=True)
    lines = rows["row_id"].to_numpy()

    seconds = pd.to_numeric(rows["ts"], errors="coerce").astype("float64")
    ts = pd.to_datetime(seconds.where(np.isfinite(seconds)), unit="s", utc=True, errors="coerce")
    bad_ts = ts.isna().to_numpy()

    user = rows["user_id"].astype("string")
    session = rows["session_id"].astype("string")
    user = user.where(_present(user), "anon:" + session)
    session = session.where(_present(session), user + ":" + ts.dt.strftime("%Y-%m-%d").astype("string"))
    event_type = kind[~repeated & ~image_click].reset_index(drop=True)
    event_type = event_type.where(event_type != "click", "view")
    common = pd.DataFrame(
        {"user_id": user, "session_id": session, "item_id": rows["item_id"], "event_type": event_type, "timestamp": ts}
    )
    events, report = validate_events(
        common[~bad_ts], source=source, event_types=EVENT_TYPES, known_items=known_items, lines=lines[~bad_ts]
    )
    if bad_ts.any():  # counted with the rest, under its own reason
        report.rows_read += int(bad_ts.sum())
        report.reject(lines[bad_ts], BAD_TS, rows.loc[bad_ts, "ts"].astype(str))
    return ServiceEvents(
        events=events,
        report=report,
        rows_read=len(raw),
        image_clicks=int(image_click.sum()),
        duplicates=int(repeated.sum()),
    )


def merge_events(store: StoreData, service: ServiceEvents) -> StoreData:
    """``store`` with the service's events after its own; the service report joins the store's reports.

    Columns that only the store's log has (``price``, ``channel``) are unknown for service events: NaN and
    empty respectively.
    """
    added = service.events.copy()
    for column in store.events.columns.difference(added.columns):
        added[column] = np.nan if column == "price" else ""
    events = pd.concat([store.events, added[store.events.columns]], ignore_index=True)
    events["event_type"] = pd.Categorical(events["event_type"].astype(str), categories=list(EVENT_TYPES))
    if "channel" in events:
        events["channel"] = pd.Categorical(events["channel"].astype(str))
    reports = {**store.reports, "service_events": service.report}
    return dataclasses.replace(store, events=events, reports=reports)
