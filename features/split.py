"""Time-based train/test splits: train on the past, test on what came after."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True, kw_only=True)
class TimeSplit:
    train: pd.DataFrame
    test: pd.DataFrame
    cutoff: pd.Timestamp

    def describe(self) -> dict:
        return {
            "cutoff": self.cutoff.isoformat(),
            "train_events": len(self.train),
            "test_events": len(self.test),
            "train_users": int(self.train["user_id"].nunique()),
            "test_users": int(self.test["user_id"].nunique()),
        }


def time_split(events: pd.DataFrame, *, cutoff: pd.Timestamp | None = None, test_days: int | None = None) -> TimeSplit:
    """Split at ``cutoff`` (events at or after it are test), or hold out the last ``test_days`` calendar days.

    Give exactly one of the two. ``test_days=1`` holds out the (UTC) day of the last event, whatever
    its time of day, so date-only logs (midnight timestamps) and timed logs split the same way.
    """
    if (cutoff is None) == (test_days is None):
        raise ValueError("give exactly one of cutoff= or test_days=")
    if events.empty:
        raise ValueError("cannot split an empty event log")
    if cutoff is None:
        assert test_days is not None  # exactly one of the two was given
        if int(test_days) != test_days or test_days < 1:
            raise ValueError(f"test_days must be a whole number of days, at least 1; got {test_days}")
        cutoff = events["timestamp"].max().floor("D") - pd.Timedelta(days=int(test_days) - 1)
    cutoff = pd.Timestamp(cutoff)
    if cutoff.tzinfo is None:
        cutoff = cutoff.tz_localize("UTC")
    is_test = (events["timestamp"] >= cutoff).to_numpy()
    train, test = events[~is_test], events[is_test]
    if train.empty or test.empty:
        raise ValueError(
            f"cutoff {cutoff.isoformat()} leaves {len(train)} train and {len(test)} test events; "
            "choose a cutoff inside the log's time range."
        )
    return TimeSplit(train=train.reset_index(drop=True), test=test.reset_index(drop=True), cutoff=cutoff)


def validation_splits(events: pd.DataFrame, *, test_days: int, periods: int) -> list[TimeSplit]:
    """``periods`` splits cut from before the test period, latest first; the test period itself is dropped.

    Split j holds out the ``test_days`` days that end where split j - 1's held-out days begin, and trains on
    everything before them, so model choices can be judged without ever scoring the test period.
    """
    if periods < 1:
        raise ValueError(f"validation periods must be >= 1; got {periods}")
    before = time_split(events, test_days=test_days).train
    splits = []
    for j in range(periods):
        try:
            split = time_split(before, test_days=test_days)
        except ValueError as err:
            raise ValueError(
                f"the log is too short for {periods} validation periods of {test_days} day(s) before the test "
                f"period: period {j + 1} has no training or no held-out events ({err})"
            ) from None
        splits.append(split)
        before = split.train
    return splits


def prices_as_of(catalogue: pd.DataFrame, train: pd.DataFrame) -> pd.DataFrame:
    """The catalogue with each item's price taken from the training events alone, where events carry prices.

    A reader that derives prices from the logs (H&M: the median price paid) sees the held-out days too; a
    model given those prices would learn from them which items sold then. Items not bought in ``train``
    get NaN. Logs without a ``price`` column leave the catalogue's listed prices as they are.
    """
    if "price" not in train or train["price"].isna().all():
        return catalogue
    paid = train.groupby("item_id")["price"].median()
    return catalogue.assign(price=catalogue["item_id"].map(paid).astype(float))
