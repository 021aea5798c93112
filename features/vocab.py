"""Id vocabularies: stable string id ↔ dense integer index maps."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd


class IdVocabulary:
    """Maps string ids to 0..n-1 in first-seen order (or sorted, when ``sort=True``).

    scikit-learn style: ``fit`` returns self and fitted state ends in ``_``. Unknown ids transform to -1,
    so a caller decides what an unknown id means (cold start, rejection) instead of this class guessing.
    """

    def __init__(self, *, sort: bool = False) -> None:
        self.sort = sort

    def fit(self, ids: Iterable[str]) -> IdVocabulary:
        values = pd.unique(pd.Series(list(ids) if not isinstance(ids, pd.Series) else ids, dtype="string"))
        values = np.asarray(values, dtype=str)
        if self.sort:
            values = np.sort(values)
        self.ids_ = values
        self.index_ = pd.Index(values)
        return self

    def __len__(self) -> int:
        return len(self.ids_)

    def transform(self, ids: Iterable[str]) -> np.ndarray:
        """Integer codes for ``ids``; -1 where an id is not in the vocabulary."""
        return self.index_.get_indexer(
            pd.Index(np.asarray(list(ids) if not isinstance(ids, (pd.Series, np.ndarray)) else ids, dtype=str))
        )

    def inverse_transform(self, codes: np.ndarray) -> np.ndarray:
        return self.ids_[np.asarray(codes, dtype=np.int64)]

    def get(self, id_: str) -> int:
        """The code of one id, or -1."""
        try:
            return int(self.index_.get_loc(id_))
        except KeyError:
            return -1

    @classmethod
    def from_ids(cls, ids: np.ndarray) -> IdVocabulary:
        """Rebuild a fitted vocabulary from saved ids, keeping their order."""
        vocab = cls()
        vocab.ids_ = np.asarray(ids, dtype=str)
        vocab.index_ = pd.Index(vocab.ids_)
        if not vocab.index_.is_unique:
            raise ValueError("saved vocabulary has repeated ids; the file is corrupt.")
        return vocab
