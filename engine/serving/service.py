"""The one object the API holds: the serving bundle, swapped atomically on promotion, and what a storefront asks.

The API's lifespan creates one :class:`Service`; request handlers ask it for image sets (with the shopper's
experiment variant and its exposure recorded), images, items and session events. Nothing else in the API
touches the bundle.

Bundles (:mod:`engine.serving.bundles`): a reload loads and checks the new bundle completely before the swap, so
requests in flight finish on the old Personaliser and a bad bundle never replaces a good one; every
``watch_seconds`` the service follows the registry's CURRENT pointer, so every worker and host picks up
``vitrine promote``; and an image id renders whichever of the old and the new bundle issued it, so that hosts
that follow the pointer seconds apart never answer each other's images 404.

Experiments: without a running experiment for the shopper's unit, a shopper gets the Personaliser's set. When
one is running (at the request time) and the unit falls in its traffic share, the unit's variant decides:
strategy ``personalised`` is the Personaliser's generated set (session fold-in included), strategy ``popular``
the catalogue's photos of its most popular items, the same for everyone. :mod:`engine.serving.arms` chooses the
experiment and the arm and records the exposure before the set is returned; when the event store fails it shows
the control arm's set and says so (``ShownSet.experiment_skipped``), never an error.

Precomputed sets: the Personaliser's set for a request without session events is looked up first among the sets
a batch job made in advance (:mod:`engine.serving.precomputed`; the SQLite file in the artifacts root unless
``SharedState.precomputed`` names another store); a session with events, a session event posted under the
shopper's token, and erasure drop the shopper's stored sets.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from engine.artifacts.bundle import Bundle
from engine.artifacts.registry import ArtifactRegistry
from engine.experiments.definition import Experiment
from engine.experiments.eventstore import EventStore, to_epoch
from engine.serving.arms import ExperimentArms
from engine.serving.bundles import KEEP_PREVIOUS_SECONDS, ServingBundles
from engine.serving.cache import LruCache
from engine.serving.config import PersonaliserConfig
from engine.serving.image_ids import load_or_create_key
from engine.serving.latents import LatentStore, MemoryLatentStore
from engine.serving.limits import AdmissionGate
from engine.serving.metrics import ServingMetrics
from engine.serving.personaliser import Personaliser
from engine.serving.precomputed import PrecomputedSets, SetParams
from engine.serving.precomputed_store import PrecomputedStore, SqlitePrecomputedStore
from engine.serving.privacy import MASKED_PREFIX, Erasure, Identities, SessionOwners, drop_sessions, forget
from engine.serving.sessions import MemorySessionStore, SessionEvent, SessionStore, SessionStoreUnavailable
from engine.serving.types import CatalogueImage, ImageSet, PopularSet, ShownSet, UnknownItems
from features.pseudonyms import Pseudonymiser

logger = logging.getLogger(__name__)


def configure_runtime(torch_threads: int | None) -> None:
    """Per-process torch settings for serving (intra-op threads per request)."""
    if torch_threads:
        torch.set_num_threads(torch_threads)


@dataclass(frozen=True, kw_only=True, slots=True)
class _SetRequest:
    """One image-set request's shopper, size and catalogue filters, as the service passes them along."""

    user_id: str  # the shopper's pseudonym: what exposures record
    lookup_id: str  # what the bundle is asked about: the pseudonym, or a masked id for an erased shopper
    n: int
    neighbours: int
    session_id: str | None
    classes: tuple[str, ...] | None
    in_stock_only: bool


@dataclass(frozen=True, kw_only=True)
class SharedState:
    """What the service keeps outside the bundle, and so what several workers or hosts must share: the event
    store (None: experiments are off and every shopper gets the Personaliser's set), the session store, the
    optimised latent codes that image ids refer to, and the key that signs image ids (None: the key file in
    the artifacts root, ``image_ids.load_or_create_key``), which sessions each shopper used (for erasure) and
    the pseudonym keyring. The stores default to this process only."""

    events: EventStore | None = None
    sessions: SessionStore = field(default_factory=MemorySessionStore)
    latents: LatentStore = field(default_factory=MemoryLatentStore)
    image_key: bytes | None = None
    owners: SessionOwners = field(default_factory=SessionOwners)
    pseudonyms: Pseudonymiser | None = None  # None: the keyring in the artifacts root
    precomputed: PrecomputedStore | None = None  # sets made in advance; None: the SQLite file in the artifacts root


class Service:
    def __init__(
        self,
        artifacts: Path,
        *,
        config: PersonaliserConfig | None = None,
        shared: SharedState | None = None,
        watch_seconds: float | None = 5.0,
        keep_previous_seconds: float = KEEP_PREVIOUS_SECONDS,
        popular_cache_size: int = 64,
        metrics: ServingMetrics | None = None,
        experiments_refresh_seconds: float = 0.0,
        warm_up: bool = False,
    ) -> None:
        """``shared``: the state outside the bundle that workers share (default: this process's own); ``metrics``:
        where image sets, set-cache look-ups and the admission gate are counted (default: a registry of its own);
        ``watch_seconds`` and ``keep_previous_seconds``: see :class:`engine.serving.bundles.ServingBundles`;
        ``experiments_refresh_seconds``: how long the list of experiments is reused (:mod:`engine.serving.arms`);
        ``warm_up``: a server process's setting (:mod:`engine.serving.bundles`)."""
        shared = shared or SharedState()
        self.registry = ArtifactRegistry(artifacts)
        self.config = config or PersonaliserConfig()
        self.events = shared.events
        self.experiments = ExperimentArms(shared.events, refresh_seconds=experiments_refresh_seconds)
        self.sessions = shared.sessions
        self.latents = shared.latents
        self._image_key = shared.image_key or load_or_create_key(self.registry.root)
        self.identities = Identities(self.registry.root, shared.pseudonyms)
        self.owners = shared.owners
        self._erased_seen: set[str] = set(self.identities.register.erased())
        self.bundles = ServingBundles(
            self.registry,
            self._personaliser_of,
            watch_seconds=watch_seconds,
            keep_previous_seconds=keep_previous_seconds,
            warm_up=warm_up,
        )
        self._popular_sets: LruCache[list[CatalogueImage]] = LruCache(popular_cache_size)
        self.metrics = metrics or ServingMetrics()
        self.precomputed = PrecomputedSets(
            shared.precomputed or SqlitePrecomputedStore.under(self.registry.root),
            self.config,
            on_lookup=lambda hit: self.metrics.precomputed_set(hit=hit),
        )
        # one gate for every bundle this service loads: generations in flight on the old one still count
        self.gate = AdmissionGate(
            max_running=self.config.max_concurrent_generations,
            max_waiting=self.config.max_queued_generations,
            observer=self.metrics,
        )

    # ---- the serving bundle (engine.serving.bundles) --------------------------------------------------
    def _personaliser_of(self, bundle: Bundle) -> Personaliser:
        return Personaliser(bundle, self.config, key=self._image_key, latents=self.latents, gate=self.gate)

    @property
    def personaliser(self) -> Personaliser:
        """The serving Personaliser; NoBundle when none is loaded."""
        return self.bundles.serving()

    @property
    def version(self) -> str | None:
        p = self.bundles.current
        return p.version if p is not None else None

    @property
    def last_error(self) -> str | None:
        return self.bundles.last_error

    @property
    def watch_seconds(self) -> float | None:
        return self.bundles.watch_seconds

    @watch_seconds.setter
    def watch_seconds(self, seconds: float | None) -> None:
        self.bundles.watch_seconds = seconds

    def load_current(self) -> str | None:
        """Load the bundle the registry points at. A broken one is logged and left out, not fatal."""
        return self.bundles.load_current()

    def reload(self, version: str | None = None) -> str:
        """Load ``version`` (default: the registry's CURRENT) and swap it in; raise BundleRefused if it fails."""
        return self.bundles.reload(version)

    def follow_pointer(self) -> None:
        """Every ``watch_seconds``, pick up a newly promoted bundle (so every worker and host follows `vitrine
        promote`) and the erasures made elsewhere. Image-set requests and health checks call it, so that a host
        that only a balancer's health checks reach follows too. A bundle that fails to load is logged and
        skipped; the current one keeps serving."""
        if self.bundles.due():
            self.follow_erasures()
            self.bundles.follow()

    # ---- what a storefront asks -----------------------------------------------------------------------
    def item(self, item_id: str) -> dict[str, Any] | None:
        """A catalogue item's metadata, or None."""
        return self.personaliser.catalogue.item(item_id)

    def item_image_path(self, item_id: str) -> Path | None:
        """A catalogue item's photo on disk, or None."""
        return self.personaliser.catalogue.image_path(item_id)

    # ---- shoppers' identities and erasure (engine.serving.privacy) ------------------------------------
    def pseudonym(self, user_id: str) -> str:
        """A shop's shopper id as the pseudonym every layer below the HTTP API stores and asks about."""
        p = self.bundles.current
        return self.identities.resolve(user_id, p.knows if p is not None else lambda _: False)

    def _lookup(self, pseudonym: str, session_id: str | None) -> str:
        if session_id:
            self.owners.link(pseudonym, session_id)
        p = self.bundles.current
        return self.identities.lookup_id(pseudonym, p.bundle.manifest if p is not None else None)

    def follow_erasures(self) -> None:
        """Drop what this process holds of shoppers erased elsewhere (``vitrine privacy forget``, another
        worker): the register already masks them; this frees their sessions, sets, images and latent codes."""
        erased = self.identities.register.erased()
        new = [p for p in erased if p not in self._erased_seen]
        if new:
            drop_sessions(new, sessions=self.sessions, owners=self.owners)
            self.precomputed.forget(new)
        for personaliser in self.bundles.loaded() if new else ():
            personaliser.forget_cached([*new, *(MASKED_PREFIX + p for p in new)])
        self._erased_seen = set(erased)

    def forget(self, user_id: str) -> Erasure:
        """Erase a shopper at once (see :func:`engine.serving.privacy.forget`); they are served as new from now."""
        candidates = self.identities.pseudonyms.candidates(user_id)

        def purge(ids: list[str]) -> dict[str, int]:
            counts: dict[str, int] = {}
            for p in self.bundles.loaded():  # the serving bundle's caches, and those of the one it replaced
                for what, n in p.forget_cached([*ids, *(MASKED_PREFIX + i for i in ids)]).items():
                    counts[what] = counts.get(what, 0) + n
            return {**counts, "precomputed_sets": self.precomputed.forget(ids)}

        return forget(
            candidates,
            identities=self.identities,
            events=self.events,
            sessions=self.sessions,
            owners=self.owners,
            purge_caches=purge,
        )

    def recommended_items(self, user_id: str, k: int, *, session_id: str | None = None) -> tuple[list[str], str, str]:
        """(the shopper's top-k item ids as serving ranks them, what ranked them: ``ranker`` or ``embeddings``,
        the bundle version); the session's events, if any, count as the shopper's latest. ``user_id`` is the
        shopper's pseudonym (:meth:`pseudonym`)."""
        p = self.personaliser  # one bundle for the whole answer, even if a promotion lands meanwhile
        items = p.recommended_items(self._lookup(user_id, session_id), k, session=self._session(session_id))
        return items, "ranker" if p.ranker is not None else "embeddings", p.version

    def render_png(self, image_id: str, size: int | None = None) -> bytes:
        """A generated image's PNG at ``size`` px (default: the generator's), rendered by the bundle that issued it
        (the serving one, the one it replaced a few minutes ago, or one just promoted on another host: see
        :meth:`ServingBundles.for_image`); UnknownImage when none of them can render the id (not one they issued, or
        expired); SizeUnavailable for a size it does not serve (larger ones
        need its super-resolution component); LatentStoreUnavailable when the shared latent store does not answer."""
        return self.bundles.for_image(image_id).render_png(image_id, size)

    def enhance_png(self, data: bytes) -> bytes:
        """A merchant's photo restored (denoised, deblocked, deblurred) by the bundle's restoration net, as PNG of
        the same size; NotAnImage for bytes that are not a readable image, SizeUnavailable when the bundle has no
        restoration net."""
        personaliser = self.personaliser
        with personaliser.gate.admit():
            return personaliser.enhancer.restore_png(data)

    def add_session_events(self, session_id: str, events: list[SessionEvent], *, owner: str | None = None) -> int:
        """Store events of catalogue items; raise UnknownItems naming the others (nothing is stored then), and
        SessionStoreUnavailable when the session store does not answer. ``owner``: the pseudonym of the shopper
        whose token posted them: the session is linked to them (for erasure) and the sets precomputed for them
        are dropped, so that their next set is made afresh."""
        catalogue = self.personaliser.catalogue
        unknown = sorted({e.item_id for e in events if e.item_id not in catalogue.rows})
        if unknown:
            raise UnknownItems(unknown)
        total = self.sessions.add(session_id, events)
        if owner is not None:
            self.owners.link(owner, session_id)
            self.precomputed.forget([owner])
        return total

    def _popular(self, request: _SetRequest) -> PopularSet:
        """The catalogue's popular set, cached per (bundle, n, neighbours, filters): the same for every shopper."""
        personaliser = self.personaliser
        key = (personaliser.version, request.n, request.neighbours, request.classes, request.in_stock_only)
        images = self._popular_sets.get(key)
        if images is None:
            images = personaliser.catalogue.popular_set(
                request.lookup_id,
                request.n,
                neighbours=request.neighbours,
                classes=request.classes,
                in_stock_only=request.in_stock_only,
            ).images
            self._popular_sets.put(key, images)
        return PopularSet(user_id=request.user_id, bundle_version=personaliser.version, images=images)

    def running_experiments(self, at: float, name: str | None = None) -> list[Experiment]:
        """The experiment ``name`` (UnknownExperiment if there is none) or every experiment, running at ``at``."""
        return self.experiments.running(at, name)

    def image_set(
        self,
        user_id: str,
        n: int,
        *,
        neighbours: int,
        session_id: str | None = None,
        at: datetime | float | None = None,
        experiment: str | None = None,
        exposure_id: str | None = None,
        classes: tuple[str, ...] | None = None,
        in_stock_only: bool = True,
    ) -> ShownSet:
        """The set to show ``user_id`` at ``at`` (default now), recording the exposure when an experiment
        applies. ``exposure_id`` makes a retried request record its exposure once. The catalogue filters
        (``classes``, ``in_stock_only``) apply to every arm alike. ValueError names an unknown class."""
        started = time.perf_counter()
        self.follow_pointer()
        ts = to_epoch(at)
        request = _SetRequest(
            user_id=user_id,
            lookup_id=self._lookup(user_id, session_id),
            n=n,
            neighbours=neighbours,
            session_id=session_id,
            classes=self.personaliser.catalogue.allowed_classes(classes),
            in_stock_only=in_stock_only,
        )
        shown = self.experiments.shown_set(
            user_id=request.user_id,
            session_id=session_id,
            at=ts,
            name=experiment,
            exposure_id=exposure_id or uuid.uuid4().hex,
            variant_set=lambda exp, variant: self._variant_set(exp, variant, request),
            default=lambda: self._personalised(request),
        )
        self.metrics.image_set(shown.images, time.perf_counter() - started)
        return shown

    def _session(self, session_id: str | None) -> list[SessionEvent] | None:
        """The session's events; None, logged, when the session store does not answer: the set is then
        served without them, never an error."""
        if not session_id:
            return None
        try:
            return self.sessions.get(session_id)
        except SessionStoreUnavailable as exc:
            logger.error("serving session %s without its events: %s", session_id, exc)
            return None

    def _personalised(self, request: _SetRequest) -> ImageSet:
        personaliser = self.personaliser  # one bundle for the whole answer
        session = self._session(request.session_id)
        if session:  # the shopper did something since any set made in advance: theirs are made afresh from now
            self.precomputed.forget([request.lookup_id])
        else:
            params = SetParams(
                n=request.n, neighbours=request.neighbours, classes=request.classes, in_stock_only=request.in_stock_only
            )
            stored = self.precomputed.lookup(personaliser, request.lookup_id, params)
            if stored is not None:
                return stored
        return personaliser.image_set(
            request.lookup_id,
            request.n,
            neighbours=request.neighbours,
            session=session,
            classes=request.classes,
            in_stock_only=request.in_stock_only,
        )

    def _variant_set(self, exp: Experiment, variant: str, request: _SetRequest) -> ImageSet | PopularSet:
        strategy = exp.variant(variant).strategy
        if strategy == "popular":
            return self._popular(request)
        if strategy == "personalised":
            return self._personalised(request)
        raise ValueError(f"experiment {exp.name!r}, variant {variant!r}: the storefront cannot show {strategy!r}")
