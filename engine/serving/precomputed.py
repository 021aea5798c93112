"""Precomputed image sets: known shoppers' sets made in advance by a batch job, served before making one afresh.

After training and after each promotion, ``vitrine batch image-sets`` renders every known shopper's set with the
serving bundle, as :meth:`engine.serving.personaliser.Personaliser.image_set` makes it for a request without a
session, and writes it to a :class:`~engine.serving.precomputed_store.PrecomputedStore`: the images' conditions,
ids and grounded items, the optimised latent codes those ids refer to, and optionally the PNGs. The API asks
:class:`PrecomputedSets` first; a stored set is served only while it is valid:

- it was made by the serving bundle: the store is keyed by bundle version, so a promotion switches to the new
  version's entries (and, until the job has run for it, sets are made afresh);
- it was made for these request parameters and with these generation settings (:class:`SetParams`);
- the shopper has had no session event since: a request whose session holds events is made afresh, and it (or a
  session event posted under the shopper's token) deletes the shopper's stored sets, so the next one is fresh too;
- the shopper has not been erased: erasure deletes their stored sets, and an erased shopper is looked up under a
  masked id that nothing is stored under;
- every image id in it verifies under the serving bundle and key (a job run with another image key, or a
  garbled entry, is a miss, logged).

A served set is the very set that fresh generation would give (the same image ids, conditions and items):
the job calls the same code with the same bundle, key and settings, and the noise is seeded by (shopper,
bundle version, slot). Its latent codes go to the latent store, so its ids render on any worker.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.serving.config import PersonaliserConfig
from engine.serving.precomputed_store import PrecomputedStore, PrecomputedStoreUnavailable
from engine.serving.types import Explanation, GeneratedImage, ImageSet, NearestItem, UnknownImage

if TYPE_CHECKING:
    from engine.serving.personaliser import Personaliser

logger = logging.getLogger(__name__)

#: Layout of an encoded set; a change bumps it (and the job is run again: entries are rebuilt, not migrated).
SET_SCHEMA_VERSION = 1

# The Personaliser's settings that change what a set holds (the rest are limits and cache sizes).
_RECIPE_EXCLUDES = frozenset(
    {"max_set_size", "max_neighbours", "max_concurrent_generations", "max_queued_generations", "cache_size"}
    | {"set_cache_size", "render_pngs"}
)


def recipe(config: PersonaliserConfig) -> str:
    """A digest of the generation settings in ``config``: a set stored under other settings is not served."""
    settings = {k: v for k, v in sorted(dataclasses.asdict(config).items()) if k not in _RECIPE_EXCLUDES}
    return hashlib.blake2b(json.dumps(settings, default=list).encode(), digest_size=6).hexdigest()


@dataclass(frozen=True, kw_only=True)
class SetParams:
    """The request parameters a set depends on, as the job renders them and a request asks for them."""

    n: int = 8
    neighbours: int = 4
    classes: tuple[str, ...] | None = None  # as ``Catalogue.allowed_classes`` answers them: sorted, or None
    in_stock_only: bool = True

    def __post_init__(self) -> None:
        if self.n < 1 or self.neighbours < 1:
            raise ValueError(f"n and neighbours must be at least 1; got {self.n} and {self.neighbours}")

    def key(self, config: PersonaliserConfig) -> str:
        """The store's parameters key under the generation settings ``config``."""
        classes = "*" if self.classes is None else json.dumps(list(self.classes))
        return f"n={self.n};k={self.neighbours};classes={classes};stock={int(self.in_stock_only)};g={recipe(config)}"


@dataclass(frozen=True, kw_only=True)
class StoredSet:
    """A set as stored: the set, the latent codes its ids refer to (key -> bytes), PNGs by image id (maybe none)."""

    image_set: ImageSet
    latents: dict[str, bytes]
    pngs: dict[str, bytes]


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def encode_set(image_set: ImageSet, latents: dict[str, bytes], pngs: dict[str, bytes] | None = None) -> bytes:
    """A set, its latent codes and its PNGs (optional) as stored: compact JSON."""
    body = dataclasses.asdict(dataclasses.replace(image_set, cached=False, precomputed=False))
    payload = {
        "schema_version": SET_SCHEMA_VERSION,
        "set": body,
        "latents": {k: _b64(v) for k, v in sorted(latents.items())},
        "pngs": {k: _b64(v) for k, v in sorted((pngs or {}).items())},
    }
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


def decode_set(raw: bytes) -> StoredSet:
    """The stored set of :func:`encode_set`'s bytes; ValueError when they are not one (another layout)."""
    try:
        payload = json.loads(raw)
        if payload.get("schema_version") != SET_SCHEMA_VERSION:
            raise ValueError(f"layout {payload.get('schema_version')!r}, this version reads {SET_SCHEMA_VERSION}")
        body = payload["set"]
        images = [
            GeneratedImage(
                image_id=img["image_id"],
                slot=img["slot"],
                condition=img["condition"],
                score=img["score"],
                nearest=[NearestItem(**it) for it in img["nearest"]],
                explanation=None if img["explanation"] is None else Explanation(**img["explanation"]),
            )
            for img in body["images"]
        ]
        image_set = ImageSet(
            user_id=body["user_id"],
            strategy=body["strategy"],
            bundle_version=body["bundle_version"],
            images=images,
            min_pairwise_distance=body["min_pairwise_distance"],
        )
        latents = {k: base64.b64decode(v) for k, v in payload["latents"].items()}
        pngs = {k: base64.b64decode(v) for k, v in payload["pngs"].items()}
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a stored image set: {exc!r}") from exc
    return StoredSet(image_set=image_set, latents=latents, pngs=pngs)


class PrecomputedSets:
    """Serving's read-first look-up in the precomputed sets (see the module for when a stored set is served).

    ``store`` None: no precomputed sets, every look-up a miss. ``config``: the serving Personaliser's settings,
    whose generation part must match the job's. ``on_lookup(hit)`` is called after each look-up (the service's
    hit and miss counters). A store that fails is logged, never an error: the set is made afresh.
    """

    def __init__(
        self,
        store: PrecomputedStore | None,
        config: PersonaliserConfig,
        *,
        on_lookup: Callable[[bool], None] = lambda hit: None,
    ) -> None:
        self.store = store
        self.config = config
        self.on_lookup = on_lookup

    def lookup(self, personaliser: Personaliser, shopper: str, params: SetParams) -> ImageSet | None:
        """The stored set of ``shopper`` (the id the bundle is asked about) for ``params``, made by
        ``personaliser``'s bundle, or None; a hit's latent codes (and PNGs) are handed to ``personaliser``."""
        stored = self._read(personaliser, shopper, params)
        self.on_lookup(stored is not None)
        if stored is None:
            return None
        personaliser.keep_rendered(stored.latents, stored.pngs)
        return dataclasses.replace(stored.image_set, precomputed=True)

    def _read(self, personaliser: Personaliser, shopper: str, params: SetParams) -> StoredSet | None:
        if self.store is None:
            return None
        try:
            raw = self.store.get(personaliser.version, shopper, params.key(self.config))
        except PrecomputedStoreUnavailable as exc:
            logger.error("precomputed sets not read, making the set afresh: %s", exc)
            return None
        if raw is None:
            return None
        try:
            stored = decode_set(raw)
        except ValueError as exc:
            logger.warning(
                "a precomputed set of bundle %s is unreadable (%s); run the job again", personaliser.version, exc
            )
            return None
        problem = _invalid(stored, personaliser, shopper, params)
        if problem:
            logger.warning("a precomputed set of bundle %s is not served: %s", personaliser.version, problem)
            return None
        return stored

    def forget(self, shoppers: list[str]) -> int:
        """Delete every stored set of these shoppers (erasure, a session event); how many. A store that fails is
        logged and answers 0 (an erased shopper is masked anyway; a session's shopper is served afresh while
        their request carries the session)."""
        if self.store is None or not shoppers:
            return 0
        try:
            return self.store.delete_shoppers(shoppers)
        except PrecomputedStoreUnavailable as exc:
            logger.error("precomputed sets not deleted: %s", exc)
            return 0


def _invalid(stored: StoredSet, personaliser: Personaliser, shopper: str, params: SetParams) -> str | None:
    """Why ``stored`` may not be served for this request, or None."""
    s = stored.image_set
    if s.bundle_version != personaliser.version or s.user_id != shopper or len(s.images) != params.n:
        return "it names another bundle, shopper or size than it is stored under"
    for img in s.images:
        try:
            ref = personaliser.ids.decode(img.image_id)
        except UnknownImage as exc:
            return f"{exc} (was the job run with another image key? give it VITRINE_IMAGE_KEY)"
        if ref.latent is not None and ref.latent not in stored.latents:
            return f"image {img.image_id} refers to a latent code the entry lacks"
    return None


def stored_entry(personaliser: Personaliser, image_set: ImageSet, *, pngs: bool = False) -> bytes:
    """The encoded entry of a set ``personaliser`` just made: with the latent codes its ids refer to (read back
    from ``personaliser.latents``) and, with ``pngs``, its images' PNGs (from its image cache)."""
    latents: dict[str, bytes] = {}
    for img in image_set.images:
        key = personaliser.ids.decode(img.image_id).latent
        if key is not None:
            raw = personaliser.latents.get(key)
            if raw is None:
                raise RuntimeError(f"the latent code of {img.image_id} left the store before it was read")
            latents[key] = raw
    rendered = {img.image_id: personaliser.render_png(img.image_id) for img in image_set.images} if pngs else None
    return encode_set(image_set, latents, rendered)


def known_shoppers(personaliser: Personaliser) -> list[str]:
    """Every shopper the bundle knows (its embeddings' and its ranker's), by pseudonym, sorted: whom the batch job
    renders, in this order."""
    users = set(personaliser.bundle.embeddings.user_ids.astype(str))
    if personaliser.ranker is not None:
        users |= set(personaliser.ranker.user_ids)
    return sorted(users)
