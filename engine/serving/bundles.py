"""The bundles a server process serves from: the one it serves, the one that one replaced, and the pointer both
follow.

Every process follows the registry's ``CURRENT`` pointer on its own clock (every ``watch_seconds``, when a request
or a health check asks), so for a few seconds after ``vitrine promote`` some hosts of a deployment (and some
workers of a host) serve the new bundle and some still the old one. A page's image requests, which a balancer
sends to any host, then name ids of either bundle. So that none of them fails:

- after a swap, the Personaliser it replaced is kept for ``keep_previous_seconds`` (5 minutes; two bundles in
  memory meanwhile): ids the old bundle issued, on this host or another, still render here;
- an id issued by the bundle the pointer names now, which this process has not loaded yet, makes it load that
  bundle at once (the request waits for the load) rather than answer 404.

Loading is all or nothing: a bundle is loaded and checked completely before the swap, so requests in flight
finish on the old Personaliser, and a bundle that fails is refused (logged, remembered) while the old one serves.

With ``warm_up`` (the API server's setting) a loaded bundle first makes a set for a known shopper and one for a
new shopper (:func:`warm_up`), and is refused if it cannot; after the swap, :func:`freeze_heap` takes what the
process holds by then (the bundle, torch, the libraries those sets imported) out of the garbage collector's
view. The first request then finds torch's kernels chosen and the modules loaded, and full collections walk only
what requests leave behind: without the freeze they walked everything, pauses of 20 ms rising to 300 ms every few
seconds under load, the whole 99th percentile of cached sets on the demo bundle.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable

from engine.artifacts.bundle import Bundle, load_bundle
from engine.artifacts.registry import ArtifactRegistry, BundleRefused
from engine.serving.image_ids import bundle_tag, issuing_bundle
from engine.serving.latents import MemoryLatentStore
from engine.serving.limits import AdmissionGate
from engine.serving.personaliser import Personaliser
from engine.serving.types import NoBundle

logger = logging.getLogger(__name__)

#: How long a replaced bundle keeps rendering its ids: far longer than hosts take to follow the pointer.
KEEP_PREVIOUS_SECONDS = 300.0


#: Who a warm-up set is made for: no pseudonym looks like it (they are ``ps<key>-<hex>``), so no one's set.
WARM_UP_SHOPPER = "vitrine-warm-up"


def warm_up(personaliser: Personaliser) -> None:
    """Make a set of 4 for the bundle's first known shopper and one for a new shopper, then forget them: what the
    first requests would otherwise pay for (lazy imports, torch's kernel choices), and proof that the bundle makes
    sets at all (an error propagates). Their latent codes go to a store of the warm-up's own, never to the shared
    one: another host's real set for that shopper may name the same codes, and this process keeps none. They pass
    no admission gate: a promotion under overload must not be refused because the serving bundle's requests
    hold every place."""
    known = personaliser.bundle.embeddings.user_ids
    shoppers = [str(known[0])] if len(known) else []
    shared = personaliser.latents, personaliser.gate
    personaliser.latents, personaliser.gate = MemoryLatentStore(), AdmissionGate(max_running=None)
    try:
        for shopper in [*shoppers, WARM_UP_SHOPPER]:
            personaliser.image_set(shopper, 4, neighbours=2)
        personaliser.forget_cached([*shoppers, WARM_UP_SHOPPER])
    finally:
        personaliser.latents, personaliser.gate = shared


def freeze_heap() -> None:
    """Collect what is garbage now, then move every object left into the collector's permanent generation
    (:func:`gc.freeze`), where full collections no longer walk it. What was frozen before is unfrozen first, so
    a replaced bundle whose objects form cycles is freed at the next swap rather than never."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class ServingBundles:
    """The serving Personaliser of one process, swapped atomically, and the one it replaced, for a while.

    ``make`` builds a Personaliser of a loaded bundle (the service's key, latent store and gate);
    ``watch_seconds`` None: the pointer is followed only by :meth:`reload`; ``warm_up``: see the module.
    """

    def __init__(
        self,
        registry: ArtifactRegistry,
        make: Callable[[Bundle], Personaliser],
        *,
        watch_seconds: float | None = 5.0,
        keep_previous_seconds: float = KEEP_PREVIOUS_SECONDS,
        warm_up: bool = False,
    ) -> None:
        self.registry = registry
        self.warm_up = warm_up
        self.watch_seconds = watch_seconds
        self.keep_previous_seconds = keep_previous_seconds
        self.last_error: str | None = None
        self._make = make
        self._current: Personaliser | None = None
        self._previous: Personaliser | None = None
        self._previous_until = 0.0
        self._lock = threading.Lock()  # one load at a time; readers never take it
        self._last_check = time.monotonic()
        self._refused: set[str] = set()

    @property
    def current(self) -> Personaliser | None:
        return self._current

    def serving(self) -> Personaliser:
        """The serving Personaliser; NoBundle, saying what to do, when none is loaded."""
        p = self._current
        if p is None:
            raise NoBundle(
                f"no model bundle is serving from {self.registry.root}"
                + (f" ({self.last_error})" if self.last_error else "")
                + "; train one with `vitrine train --promote`"
            )
        return p

    def previous(self) -> Personaliser | None:
        """The Personaliser the serving one replaced, while it is kept (then None, and its memory freed)."""
        p = self._previous
        if p is not None and time.monotonic() >= self._previous_until:
            self._previous = p = None
        return p

    def loaded(self) -> list[Personaliser]:
        """Every Personaliser this process holds: the serving one, then the one it replaced."""
        return [p for p in (self._current, self.previous()) if p is not None]

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
        """Load ``version`` (default: the registry's CURRENT) and swap it in; BundleRefused if it fails."""
        version = version or self.registry.current()
        if version is None:
            raise BundleRefused("the registry has no CURRENT bundle to load")
        with self._lock:
            old = self._current
            if old is not None and old.version == version:
                return version
            personaliser = self._make(load_bundle(self.registry.path(version)))
            if self.warm_up:
                _warm(personaliser)
            if old is not None and self.keep_previous_seconds > 0:
                self._previous, self._previous_until = old, time.monotonic() + self.keep_previous_seconds
            self._current = personaliser  # a single reference swap: atomic for readers
            self.last_error = None
            if self.warm_up:
                freeze_heap()
        logger.info("serving bundle %s", version)
        return version

    def due(self) -> bool:
        """Whether ``watch_seconds`` have passed since the pointer was last looked at (and now it is)."""
        if self.watch_seconds is None or time.monotonic() - self._last_check < self.watch_seconds:
            return False
        self._last_check = time.monotonic()
        return True

    def follow(self) -> None:
        """Load the bundle the pointer names if it is new, in the background: the request that noticed the change
        does not wait for it. A bundle that fails is logged and not tried again; the current one keeps serving."""
        current = self.registry.current()
        if current and current != self._version() and current not in self._refused and not self._lock.locked():
            threading.Thread(target=self._load_quietly, args=(current,), daemon=True).start()

    def for_image(self, image_id: str) -> Personaliser:
        """The Personaliser that issued ``image_id``: the serving one, the one it replaced (while kept), or the one
        the pointer names now, loaded at once (another host serves it already). Else the serving one, whose
        decoding says why the id is not valid."""
        serving = self.serving()
        tag = issuing_bundle(image_id)
        if tag is None or tag == serving.ids.bundle_tag:
            return serving
        previous = self.previous()
        if previous is not None and tag == previous.ids.bundle_tag:
            return previous
        pointer = self.registry.current()
        if pointer and pointer not in self._refused and bundle_tag(pointer) == tag:
            logger.info("image of bundle %s, which the pointer names: loading it now", pointer)
            self._load_quietly(pointer)
            return self.serving()
        return serving

    def _version(self) -> str | None:
        p = self._current
        return p.version if p is not None else None

    def _load_quietly(self, version: str) -> None:
        try:
            self.reload(version)
        except (BundleRefused, ValueError) as exc:
            self._refused.add(version)
            self.last_error = str(exc)
            logger.error("promoted bundle %s not loaded, still serving %s: %s", version, self._version(), exc)


def _warm(personaliser: Personaliser) -> None:
    started = time.perf_counter()
    try:
        warm_up(personaliser)
    except Exception as exc:  # any failure to make a set: the bundle cannot serve
        raise BundleRefused(f"bundle {personaliser.version} could not make a warm-up set: {exc!r}") from exc
    logger.info("bundle %s warmed up in %.2f s", personaliser.version, time.perf_counter() - started)
