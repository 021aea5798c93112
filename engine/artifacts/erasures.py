"""The erasure register: which shoppers asked to be forgotten, and when.

One line per erasure in ``<artifacts>/privacy/erasures.jsonl``: ``{"pseudonym": ..., "erased_at": epoch}``. It
holds pseudonyms only, never a shop's shopper id. Training and serving share the artifacts folder, so both read
it:

- serving masks a shopper erased after the serving bundle was trained: they are served as a new shopper from
  that moment, on every worker and host that reads the folder (:meth:`ErasureRegister.masked`);
- training drops every event of an erased shopper that happened before the erasure; what they do after it is
  new, consented data (:meth:`ErasureRegister.keep_events`).

Lines are appended under an exclusive lock and written whole, so concurrent erasures never interleave; a line
that cannot be parsed (a torn write from a crash) is skipped with a warning, never fatal.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

REGISTER = Path("privacy") / "erasures.jsonl"


class ErasureRegister:
    """Reads and appends the register under an artifacts root; re-reads it only when the file changes."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / REGISTER
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._erased: dict[str, float] = {}

    def add(self, pseudonyms: Iterable[str], erased_at: float) -> None:
        lines = "".join(json.dumps({"pseudonym": p, "erased_at": erased_at}) + "\n" for p in pseudonyms)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":  # a torn line from a crash: start a new one
                lines = "\n" + lines
            os.write(fd, lines.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def erased(self) -> dict[str, float]:
        """pseudonym -> the latest time it was erased (epoch seconds)."""
        with self._lock:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                self._stamp, self._erased = None, {}
                return {}
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                self._erased = self._parse()
                self._stamp = stamp
            return self._erased

    def _parse(self) -> dict[str, float]:
        erased: dict[str, float] = {}
        with open(self.path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                try:
                    row = json.loads(line)
                    pseudonym, when = str(row["pseudonym"]), float(row["erased_at"])
                except (ValueError, KeyError, TypeError):
                    logger.warning("%s line %d is not a register entry; skipped", self.path, n)
                    continue
                erased[pseudonym] = max(when, erased.get(pseudonym, when))
        return erased

    def erased_at(self, pseudonym: str) -> float | None:
        return self.erased().get(pseudonym)

    def masked(self, pseudonym: str, trained_at: float) -> bool:
        """Whether a bundle trained at ``trained_at`` still holds data the shopper asked to erase."""
        when = self.erased_at(pseudonym)
        return when is not None and when >= trained_at

    def keep_events(self, events: pd.DataFrame) -> np.ndarray:
        """A mask over ``events`` (columns ``user_id`` and ``timestamp``, datetime64 or epoch seconds): False for
        an event of an erased shopper from before their erasure."""
        erased = self.erased()
        if not erased or events.empty:
            return np.ones(len(events), dtype=bool)
        when = events["user_id"].map(erased)
        ts = events["timestamp"]
        if pd.api.types.is_datetime64_any_dtype(ts):
            epoch = pd.Timestamp(0, tz="UTC") if ts.dt.tz is not None else pd.Timestamp(0)
            seconds = (ts - epoch) / pd.Timedelta(seconds=1)
        else:
            seconds = ts.astype(float)
        return ~(when.notna() & (seconds <= when.fillna(0.0))).to_numpy()
