"""Row-level validation: every bad row is counted and reported with its line and reason; the rest loads.

Readers parse files as strings, then call :func:`validate_events` or :func:`validate_catalogue`, which
return the clean rows in the common schema together with a :class:`ValidationReport`. Nothing is
silently corrected: a row is either loaded as written or rejected with a reason a person can act on.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.ids import MAX_ID_LENGTH

logger = logging.getLogger(__name__)

MAX_EXAMPLES = 20


@dataclass(frozen=True, kw_only=True)
class BadRow:
    line: int  # 1-based line in the source file (the header is line 1 for CSV files)
    reason: str
    value: str


@dataclass(kw_only=True)
class ValidationReport:
    """What one source file held: rows read, rows loaded, and why the others were rejected."""

    source: str
    rows_read: int = 0
    rows_loaded: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    examples: list[BadRow] = field(default_factory=list)

    @property
    def rows_rejected(self) -> int:
        return self.rows_read - self.rows_loaded

    def reject(self, lines: Iterable[int], reason: str, values: Iterable[str]) -> None:
        lines = list(lines)
        self.reasons[reason] += len(lines)
        for line, value in zip(lines, values, strict=True):
            if len(self.examples) >= MAX_EXAMPLES:
                break
            self.examples.append(BadRow(line=int(line), reason=reason, value=str(value)[:200]))

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "rows_read": self.rows_read,
            "rows_loaded": self.rows_loaded,
            "rows_rejected": self.rows_rejected,
            "reasons": dict(self.reasons.most_common()),
            "examples": [vars(e) for e in self.examples],
        }

    def summary(self) -> str:
        if not self.rows_rejected:
            return f"{self.source}: {self.rows_loaded:,} rows loaded, none rejected"
        top = ", ".join(f"{n:,} {r}" for r, n in self.reasons.most_common(3))
        first = self.examples[0] if self.examples else None
        where = f"; first at line {first.line}: {first.reason} ({first.value!r})" if first else ""
        return f"{self.source}: {self.rows_loaded:,} rows loaded, {self.rows_rejected:,} rejected ({top}){where}"

    def log(self) -> None:
        (logger.warning if self.rows_rejected else logger.info)(self.summary())


class _RowFilter:
    """Applies checks in order; each check sees only rows that passed the previous ones."""

    def __init__(self, frame: pd.DataFrame, report: ValidationReport, lines: np.ndarray) -> None:
        self.frame = frame
        self.report = report
        self.lines = lines
        self.ok = np.ones(len(frame), dtype=bool)

    def check(self, bad: np.ndarray, reason: str, column: str) -> None:
        bad = np.asarray(bad, dtype=bool) & self.ok
        if bad.any():
            self.report.reject(self.lines[bad], reason, self.frame[column].to_numpy()[bad])
            self.ok &= ~bad


def _blank(values: pd.Series) -> np.ndarray:
    return (values.isna() | (values.astype("string").str.strip() == "")).to_numpy()


def _bad_id(values: pd.Series) -> np.ndarray:
    s = values.astype("string")
    too_long_or_control = (s.str.len() > MAX_ID_LENGTH) | s.str.contains(r"[\x00-\x1f]", regex=True)
    return _blank(values) | too_long_or_control.to_numpy(dtype=bool, na_value=True)


TRUE_WORDS = ("true", "1")
FALSE_WORDS = ("false", "0")


def _booleans(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(value, bad) per row: booleans as written (True/False, or the words true/false/1/0 in any case)."""
    if pd.api.types.is_bool_dtype(values.dtype) and not values.isna().any():
        return values.to_numpy(dtype=bool), np.zeros(len(values), dtype=bool)
    words = values.astype("string").str.strip().str.lower()
    true = words.isin(TRUE_WORDS).to_numpy(dtype=bool, na_value=False)
    false = words.isin(FALSE_WORDS).to_numpy(dtype=bool, na_value=False)
    return true, ~(true | false)


def validate_events(
    raw: pd.DataFrame,
    *,
    source: str,
    event_types: tuple[str, ...],
    known_items: pd.Index | None = None,
    first_line: int = 2,
    lines: np.ndarray | None = None,
) -> tuple[pd.DataFrame, ValidationReport]:
    """Check an event log read as strings; return the loadable rows typed, and the report.

    ``raw`` has the columns user_id, session_id, item_id, event_type, timestamp (strings or already
    typed values), and optionally price (the price paid; kept as a float, NaN where unreadable) and channel
    (where the event happened, such as "online" or "store"; kept as a string, empty where unknown).
    ``first_line`` is the source line of the first row (2 for a CSV file with a header); ``lines`` (one
    per row) names the rows instead where they are not consecutive lines, such as a database table's ids.
    Rows with an item that is not in ``known_items`` are rejected: an event must lead to a catalogue item.
    """
    report = ValidationReport(source=source, rows_read=len(raw))
    missing = [c for c in ("user_id", "session_id", "item_id", "event_type", "timestamp") if c not in raw]
    if missing:
        raise ValueError(
            f"{source}: missing columns {missing}; an event log needs "
            "user_id, session_id, item_id, event_type and timestamp."
        )
    if lines is None:
        lines = np.arange(first_line, first_line + len(raw))
    elif len(lines) != len(raw):
        raise ValueError(f"{source}: {len(lines)} line numbers for {len(raw)} rows")
    rows = _RowFilter(raw, report, np.asarray(lines))
    rows.check(_bad_id(raw["user_id"]), "user_id is empty, too long or has control characters", "user_id")
    rows.check(_bad_id(raw["session_id"]), "session_id is empty, too long or has control characters", "session_id")
    rows.check(_bad_id(raw["item_id"]), "item_id is empty, too long or has control characters", "item_id")
    etype = raw["event_type"].astype("string").str.strip()
    rows.check(
        ~etype.isin(event_types).to_numpy(dtype=bool, na_value=False),
        f"event_type is not one of {', '.join(event_types)}",
        "event_type",
    )
    ts = raw["timestamp"]
    if not pd.api.types.is_datetime64_any_dtype(ts):
        ts = pd.to_datetime(ts.astype("string"), errors="coerce", utc=True, format="ISO8601")
    elif ts.dt.tz is None:
        ts = ts.dt.tz_localize("UTC")
    else:
        ts = ts.dt.tz_convert("UTC")
    rows.check(ts.isna().to_numpy(), "timestamp is not an ISO 8601 date-time", "timestamp")
    if known_items is not None:
        unknown = ~raw["item_id"].astype("string").isin(known_items).to_numpy(dtype=bool, na_value=False)
        rows.check(unknown, "item_id is not in the catalogue", "item_id")

    ok = rows.ok
    events = pd.DataFrame(
        {
            "user_id": raw["user_id"].astype("string").to_numpy()[ok].astype(str),
            "session_id": raw["session_id"].astype("string").to_numpy()[ok].astype(str),
            "item_id": raw["item_id"].astype("string").to_numpy()[ok].astype(str),
            "event_type": pd.Categorical(etype.to_numpy()[ok], categories=list(event_types)),
            "timestamp": ts.to_numpy()[ok],
        }
    )
    events["timestamp"] = pd.to_datetime(events["timestamp"], utc=True)
    if "price" in raw:  # optional: the price paid (H&M); an unreadable or non-positive one is left unknown
        price = pd.to_numeric(raw["price"], errors="coerce").to_numpy(dtype=np.float64)[ok]
        events["price"] = np.where(price > 0, price, np.nan)
    if "channel" in raw:  # optional: where the event happened (H&M: online or in store)
        channel = raw["channel"].astype("string").str.strip().fillna("").to_numpy()[ok].astype(str)
        events["channel"] = pd.Categorical(channel)
    report.rows_loaded = len(events)
    return events, report


def validate_catalogue(
    raw: pd.DataFrame,
    *,
    source: str,
    attributes: tuple[str, ...],
    first_line: int = 2,
) -> tuple[pd.DataFrame, ValidationReport]:
    """Check a catalogue in the common schema; return the loadable items and the report.

    An item needs an id (unique: a repeated id keeps its first row and reports the rest) and a value for
    every conditioning attribute. ``price`` must be a non-negative number when present; ``image`` may
    be empty. ``in_stock`` is optional; when the catalogue has it, each row's value must be true or false
    (also written 1 or 0) and it is kept as a boolean column, which serving's in-stock filter reads. A
    catalogue without it has no such column (serving then treats every item as in stock).
    """
    report = ValidationReport(source=source, rows_read=len(raw))
    missing = [c for c in ("item_id", *attributes) if c not in raw]
    if missing:
        raise ValueError(f"{source}: missing columns {missing}; the catalogue needs item_id and {list(attributes)}.")
    lines = np.arange(first_line, first_line + len(raw))
    rows = _RowFilter(raw, report, lines)
    rows.check(_bad_id(raw["item_id"]), "item_id is empty, too long or has control characters", "item_id")
    dup = raw["item_id"].astype("string").duplicated(keep="first").to_numpy(dtype=bool)
    rows.check(dup, "item_id repeats an earlier row", "item_id")
    for attr in attributes:
        rows.check(_blank(raw[attr]), f"{attr} is empty", attr)
    price_raw = raw["price"] if "price" in raw else pd.Series(np.nan, index=raw.index)
    price = pd.to_numeric(price_raw, errors="coerce").astype("float64")
    unparsable = price.isna().to_numpy() & ~_blank(price_raw)
    rows.check(
        unparsable | (price < 0).to_numpy(),
        "price is not a non-negative number",
        "price" if "price" in raw else "item_id",
    )
    if "in_stock" in raw:
        in_stock, bad_stock = _booleans(raw["in_stock"])
        rows.check(bad_stock, "in_stock is not true or false (or 1 or 0)", "in_stock")

    ok = rows.ok
    out = pd.DataFrame({"item_id": raw["item_id"].astype("string").to_numpy()[ok].astype(str)})
    for attr in attributes:
        out[attr] = raw[attr].astype("string").str.strip().to_numpy()[ok].astype(str)
    out["price"] = price.to_numpy(dtype=float)[ok]
    image = raw["image"].fillna("").astype(str) if "image" in raw else pd.Series("", index=raw.index)
    out["image"] = image.to_numpy()[ok]
    # optional product family (variants of one product, e.g. H&M's product_code); empty when unknown
    group = raw["group"].fillna("").astype(str) if "group" in raw else pd.Series("", index=raw.index)
    out["group"] = group.to_numpy()[ok]
    if "in_stock" in raw:
        out["in_stock"] = in_stock[ok]
    report.rows_loaded = len(out)
    return out.reset_index(drop=True), report
