"""A small thread-safe least-recently-used cache: rendered PNGs, image sets and popular sets."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

V = TypeVar("V")


class LruCache(Generic[V]):
    """At most ``size`` entries; reading an entry makes it the most recently used."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"cache size must be >= 1; got {size}")
        self.size = size
        self._data: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: Hashable, value: V) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def put_many(self, items: Iterable[tuple[Hashable, V]]) -> None:
        """Put every (key, value), in order."""
        for key, value in items:
            self.put(key, value)

    def discard(self, key: Hashable) -> bool:
        """Drop ``key``; whether it was held."""
        with self._lock:
            return self._data.pop(key, None) is not None

    def discard_where(self, predicate: Callable[[Hashable, V], bool]) -> list[V]:
        """Drop every entry for which ``predicate(key, value)`` holds; the dropped values."""
        with self._lock:
            gone = [k for k, v in self._data.items() if predicate(k, v)]
            return [self._data.pop(k) for k in gone]

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)
