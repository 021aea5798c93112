"""What the API holds while it runs: the serving Personaliser, swapped atomically on reload.

The API's lifespan creates one :class:`ServingState`; request handlers ask it for image sets and images.
A reload loads and checks the new bundle completely before the swap, so requests in flight finish on
the old Personaliser and a bad bundle never replaces a good one.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import torch

from engine.artifacts.bundle import load_bundle
from engine.artifacts.registry import ArtifactRegistry, BundleRefused
from engine.serving.personaliser import ImageSet, Personaliser, PersonaliserConfig
from engine.serving.sessions import MemorySessionStore, SessionEvent, SessionStore

logger = logging.getLogger(__name__)


class NoBundle(RuntimeError):
    """No bundle is serving yet."""


def configure_runtime(torch_threads: int | None) -> None:
    """Per-process torch settings for serving (intra-op threads per request)."""
    if torch_threads:
        torch.set_num_threads(torch_threads)


class ServingState:
    def __init__(
        self,
        artifacts: Path,
        config: PersonaliserConfig | None = None,
        *,
        sessions: SessionStore | None = None,
        watch_seconds: float | None = 5.0,
    ) -> None:
        self.registry = ArtifactRegistry(artifacts)
        self.config = config or PersonaliserConfig()
        self.sessions = sessions or MemorySessionStore()
        self._personaliser: Personaliser | None = None
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self.watch_seconds = watch_seconds
        self._last_check = time.monotonic()
        self._refused: set[str] = set()

    @property
    def personaliser(self) -> Personaliser:
        p = self._personaliser
        if p is None:
            raise NoBundle(
                f"no model bundle is serving from {self.registry.root}"
                + (f" ({self.last_error})" if self.last_error else "")
                + "; train one with `vitrine train --promote`"
            )
        return p

    @property
    def version(self) -> str | None:
        return self._personaliser.version if self._personaliser else None

    def load_current(self) -> str | None:
        """Load the bundle the registry points at. A broken one is logged and left out, not fatal."""
        version = self.registry.current()
        if version is None:
            self.last_error = "the registry has no CURRENT pointer"
            logger.warning("no serving bundle under %s: %s", self.registry.root, self.last_error)
            return None
        try:
            return self.reload(version)
        except (BundleRefused, ValueError) as exc:
            self.last_error = str(exc)
            logger.error("could not load the serving bundle: %s", exc)
            return None

    def reload(self, version: str | None = None) -> str:
        """Load ``version`` (default: the registry's CURRENT) and swap it in; raise BundleRefused if it fails."""
        version = version or self.registry.current()
        if version is None:
            raise BundleRefused("the registry has no CURRENT bundle to load")
        with self._lock:  # one reload at a time; readers never take this lock
            if self._personaliser is not None and self._personaliser.version == version:
                return version
            personaliser = Personaliser(load_bundle(self.registry.path(version)), self.config)
            self._personaliser = personaliser  # a single reference swap: atomic for readers
            self.last_error = None
        logger.info("serving bundle %s", version)
        return version

    def follow_pointer(self) -> None:
        """Every ``watch_seconds``, pick up a newly promoted bundle (so every worker follows `vitrine promote`).

        A bundle that fails to load is logged and skipped; the current one keeps serving.
        """
        if self.watch_seconds is None or time.monotonic() - self._last_check < self.watch_seconds:
            return
        self._last_check = time.monotonic()
        current = self.registry.current()
        if current and current != self.version and current not in self._refused and not self._lock.locked():
            # load in the background: the request that noticed the change must not wait for it
            threading.Thread(target=self._load_quietly, args=(current,), daemon=True).start()

    def _load_quietly(self, version: str) -> None:
        try:
            self.reload(version)
        except (BundleRefused, ValueError) as exc:
            self._refused.add(version)
            self.last_error = str(exc)
            logger.error("promoted bundle %s not loaded, still serving %s: %s", version, self.version, exc)

    def image_set(
        self,
        user_id: str,
        n: int,
        *,
        neighbours: int,
        session_id: str | None = None,
        classes: tuple[str, ...] | None = None,
        in_stock_only: bool = True,
    ) -> ImageSet:
        self.follow_pointer()
        session = self.sessions.get(session_id) if session_id else None
        return self.personaliser.image_set(
            user_id, n, neighbours=neighbours, session=session, classes=classes, in_stock_only=in_stock_only
        )

    def add_session_events(self, session_id: str, events: list[SessionEvent]) -> int:
        """Store events of catalogue items; raise UnknownItems naming the others (nothing is stored then)."""
        personaliser = self.personaliser
        unknown = sorted({e.item_id for e in events if personaliser.item(e.item_id) is None})
        if unknown:
            raise UnknownItems(unknown)
        return self.sessions.add(session_id, events)


class UnknownItems(ValueError):
    def __init__(self, item_ids: list[str]) -> None:
        shown = ", ".join(item_ids[:10]) + (" …" if len(item_ids) > 10 else "")
        super().__init__(f"{len(item_ids)} event(s) name items that are not in the catalogue: {shown}")
        self.item_ids = item_ids
