import pandas as pd
import pytest

from features.schema import EVENT_TYPES
from features.validation import validate_catalogue, validate_events


def _raw_events() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ["U1", "U2", "", "U4", "U5", "U6", "U7"],
            "session_id": ["S1", "S2", "S3", "S4", "S5", "S6", "S7"],
            "item_id": ["I1", "I2", "I1", "I1", "I9", "I2", "I1"],
            "event_type": ["view", "purchase", "view", "click", "view", "add_to_cart", "view"],
            "timestamp": [
                "2026-09-01T10:00:00Z",
                "2026-09-01T11:00:00Z",
                "2026-09-01T12:00:00Z",
                "2026-09-01T13:00:00Z",
                "2026-09-01T14:00:00Z",
                "yesterday",
                "2026-09-02T09:30:00+02:00",
            ],
        }
    )


def test_bad_event_rows_are_counted_with_line_and_reason_and_the_rest_loads():
    events, report = validate_events(
        _raw_events(), source="events.csv", event_types=EVENT_TYPES, known_items=pd.Index(["I1", "I2"])
    )
    assert report.rows_read == 7
    assert report.rows_loaded == 3
    assert list(events["user_id"]) == ["U1", "U2", "U7"]
    reasons = {e.line: e.reason for e in report.examples}
    # line numbers are CSV lines: the header is line 1, the first row line 2
    assert reasons[4].startswith("user_id is empty")
    assert reasons[5].startswith("event_type is not one of")
    assert reasons[6] == "item_id is not in the catalogue"
    assert reasons[7] == "timestamp is not an ISO 8601 date-time"
    assert report.rows_rejected == 4
    assert "4 rejected" in report.summary()


def test_timestamps_are_converted_to_utc():
    events, _ = validate_events(_raw_events(), source="e", event_types=EVENT_TYPES, known_items=None)
    last = events.loc[events["user_id"] == "U7", "timestamp"].iloc[0]
    assert last == pd.Timestamp("2026-09-02T07:30:00Z")
    assert str(events["timestamp"].dt.tz) == "UTC"


def test_missing_column_is_an_error_that_names_it():
    with pytest.raises(ValueError, match="timestamp"):
        validate_events(_raw_events().drop(columns="timestamp"), source="e", event_types=EVENT_TYPES)


def test_catalogue_rejects_duplicates_blank_attributes_and_bad_prices():
    raw = pd.DataFrame(
        {
            "item_id": ["I1", "I2", "I1", "I3", "I4"],
            "class": ["dress", "cap", "dress", "", "cap"],
            "colour": ["red", "blue", "red", "red", "blue"],
            "price": ["10.5", "", "10.5", "3", "-1"],
            "image": ["images/I1.png", "", "", "", ""],
        }
    )
    cat, report = validate_catalogue(raw, source="catalogue.csv", attributes=("class", "colour"))
    assert list(cat["item_id"]) == ["I1", "I2"]
    assert cat["price"].iloc[0] == 10.5 and pd.isna(cat["price"].iloc[1])
    assert dict(report.reasons) == {
        "item_id repeats an earlier row": 1,
        "class is empty": 1,
        "price is not a non-negative number": 1,
    }


def test_catalogue_keeps_in_stock_as_booleans_and_rejects_other_values():
    raw = pd.DataFrame(
        {
            "item_id": ["I1", "I2", "I3", "I4", "I5", "I6"],
            "class": ["dress", "cap", "cap", "dress", "cap", "dress"],
            "in_stock": ["true", "False", " 1 ", "0", "maybe", ""],
        }
    )
    cat, report = validate_catalogue(raw, source="catalogue.csv", attributes=("class",))
    assert list(cat["item_id"]) == ["I1", "I2", "I3", "I4"]
    assert cat["in_stock"].dtype == bool and list(cat["in_stock"]) == [True, False, True, False]
    assert dict(report.reasons) == {"in_stock is not true or false (or 1 or 0)": 2}
    assert [(e.line, e.value) for e in report.examples] == [(6, "maybe"), (7, "")]
    typed, _ = validate_catalogue(raw.assign(in_stock=[True, False] * 3), source="c", attributes=("class",))
    assert list(typed["in_stock"]) == [True, False] * 3


def test_a_catalogue_without_in_stock_gets_no_such_column():
    cat, _ = validate_catalogue(pd.DataFrame({"item_id": ["I1"], "class": ["cap"]}), source="c", attributes=("class",))
    assert "in_stock" not in cat.columns
