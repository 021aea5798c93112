"""Event weighting: how much one event says about a shopper's liking of an item.

A purchase says more than an add-to-cart, which says more than a view; old events say less than
recent ones. The weight of an event of type ``t`` at time ``s`` with reference time ``T`` is

    w = type_weight[t] * 0.5 ** ((T - s) / half_life)

and a (user, item) pair's strength is the sum of its events' weights. The decay never goes below
``MIN_DECAY``: on a long log with a short half-life (the reranker's 3 days over two years), float32 would
round old events to exactly zero, dropping them from the matrix and leaving all-zero rows that item-kNN's
normalisation divides by. At the floor an event still counts 10⁻¹² of a fresh one, which ranks nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

DEFAULT_TYPE_WEIGHTS: dict[str, float] = {"view": 1.0, "add_to_cart": 4.0, "purchase": 10.0}
MIN_DECAY = 1e-12  # about 40 half-lives; its square (kNN norms) is still a normal float32


@dataclass(frozen=True, kw_only=True)
class WeightingConfig:
    type_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TYPE_WEIGHTS))
    half_life_days: float | None = 21.0  # None: no time decay

    def __post_init__(self) -> None:
        bad = {k: v for k, v in self.type_weights.items() if not (isinstance(v, (int, float)) and v >= 0)}
        if bad:
            raise ValueError(f"type_weights must be non-negative numbers; got {bad}")
        if self.half_life_days is not None and not (self.half_life_days > 0 and math.isfinite(self.half_life_days)):
            raise ValueError(f"half_life_days must be positive or None; got {self.half_life_days}")


class EventWeighter:
    """Turns events into weights. ``fit`` fixes the reference time (the latest event) unless given."""

    def __init__(self, config: WeightingConfig | None = None, *, reference_time: pd.Timestamp | None = None) -> None:
        self.config = config or WeightingConfig()
        self.reference_time = reference_time

    def fit(self, events: pd.DataFrame) -> EventWeighter:
        ref = self.reference_time if self.reference_time is not None else events["timestamp"].max()
        if pd.isna(ref):
            raise ValueError("cannot fit an EventWeighter on an empty event log.")
        self.reference_time_ = pd.Timestamp(ref)
        return self

    def transform(self, events: pd.DataFrame) -> np.ndarray:
        """One float32 weight per event row."""
        types = events["event_type"].astype(str)
        unknown = set(types.unique()) - set(self.config.type_weights)
        if unknown:
            raise ValueError(f"no weight for event types {sorted(unknown)}; add them to WeightingConfig.type_weights.")
        w = types.map(self.config.type_weights).to_numpy(dtype=np.float64)
        if self.config.half_life_days is not None:
            age_days = (self.reference_time_ - events["timestamp"]).dt.total_seconds().to_numpy() / 86400.0
            decay = np.power(0.5, np.clip(age_days, 0.0, None) / self.config.half_life_days)
            w = w * np.maximum(decay, MIN_DECAY)
        return w.astype(np.float32)
