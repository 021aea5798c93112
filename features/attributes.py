"""Attribute encoders: catalogue attribute values ↔ integer codes for the conditional models."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd


class AttributeEncoder:
    """Encodes each conditioning attribute (class, colour, pattern, …) as integer codes.

    ``min_count`` keeps only the values with at least that many catalogue items; rarer values encode
    to -1 so a caller can leave those items out of generator training and say so, instead of the
    encoder inventing an "other" bucket that the generator would learn as a blurry average.
    """

    def __init__(self, attributes: tuple[str, ...], *, min_count: int = 1) -> None:
        self.attributes = attributes
        self.min_count = min_count

    def fit(self, catalogue: pd.DataFrame) -> AttributeEncoder:
        self.values_: dict[str, tuple[str, ...]] = {}
        for attr in self.attributes:
            counts = catalogue[attr].astype(str).value_counts()
            kept = counts[counts >= self.min_count]
            if kept.empty:
                raise ValueError(f"no value of {attr!r} has {self.min_count} or more items; lower min_count.")
            self.values_[attr] = tuple(sorted(kept.index))
        self._index = {a: {v: k for k, v in enumerate(vals)} for a, vals in self.values_.items()}
        return self

    @property
    def cardinalities(self) -> tuple[int, ...]:
        return tuple(len(self.values_[a]) for a in self.attributes)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """(N, n_attributes) int64 codes; -1 where a value is not known."""
        out = np.empty((len(frame), len(self.attributes)), dtype=np.int64)
        for j, attr in enumerate(self.attributes):
            out[:, j] = pd.Index(self.values_[attr]).get_indexer(pd.Index(frame[attr].astype(str)))
        return out

    def encode(self, condition: Mapping[str, str]) -> np.ndarray:
        """Codes of one condition; raises with the allowed values when one is unknown."""
        codes = []
        for attr in self.attributes:
            if attr not in condition:
                raise KeyError(f"condition lacks {attr!r}; it needs {list(self.attributes)}")
            value = condition[attr]
            if value not in self._index[attr]:
                raise KeyError(f"unknown {attr} {value!r}; known values: {list(self.values_[attr])}")
            codes.append(self._index[attr][value])
        return np.asarray(codes, dtype=np.int64)

    def decode(self, codes: np.ndarray) -> dict[str, str]:
        return {attr: self.values_[attr][int(c)] for attr, c in zip(self.attributes, codes, strict=True)}

    def to_dict(self) -> dict:
        return {
            "attributes": list(self.attributes),
            "min_count": self.min_count,
            "values": {a: list(v) for a, v in self.values_.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> AttributeEncoder:
        unknown = set(data) - {"attributes", "min_count", "values"}
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)} in a saved AttributeEncoder")
        enc = cls(tuple(data["attributes"]), min_count=int(data["min_count"]))
        enc.values_ = {a: tuple(data["values"][a]) for a in enc.attributes}
        enc._index = {a: {v: k for k, v in enumerate(vals)} for a, vals in enc.values_.items()}
        return enc
