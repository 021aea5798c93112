"""Id vocabularies: stable string id ↔ dense integer index maps."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd


class IdVocabulary:
    """Maps string ids to 0..n-1 in first-seen order.

    scikit-learn style: ``fit`` returns self and fitted state ends in ``_``. Unknown ids transform to -1,
    so a caller decides what an unknown id means (cold start, rejection) instead of this class guessing.
    """

    def fit(self, ids: Iterable[str]) -> IdVocabulary:
        values = pd.unique(pd.Series(list(ids) if not isinstance(ids, pd.Series) else ids, dtype="string"))
        values = np.asarray(values, dtype=str)
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
