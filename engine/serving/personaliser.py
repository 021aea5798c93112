"""The Personaliser: from a shopper to a set of generated product images, each linked to real items.

For a shopper with a vector u (stored, or folded in from their events: ``conditions.ShopperVectors``):
1. p(condition | shopper) from their top items (``conditions.ConditionModel``): ranked by the bundle's ranker
   (``ranker.ShopperRanker``: candidate sources + LightGBM, the session's events as features) where the bundle
   has one, else by u · v; for a new shopper with no events, catalogue popularity, so a new shopper gets
   popular, varied products instead of an error;
2. n distinct conditions drawn from it (Gumbel-top-k);
3. one image per condition from the EMA generator, its noise seeded by (user, bundle version, slot), so the
   same request gives the same images;
4. for each image, the k nearest real catalogue items by image features (``grounding.Grounder``).

With a visual encoder in the bundle and a shopper vector, steps 2–4 become:
2'. a pool of m = ``pool_factor``·n candidates: m distinct conditions, seeded noise z₀ each;
3'. set construction (``preference.select_diverse``): n of the m by maximal marginal relevance on the preference
    score plus ``condition_weight``·log p(c | u), with a minimum pairwise feature distance ``min_distance``;
    by default the n are chosen on the seeded candidates and only they are optimised (half the cost);
    ``optimise_pool`` optimises every candidate first;
3''. preference maximisation (``preference.PreferenceOptimiser``): a few Adam steps on the latent codes,
    raising the shopper's visual preference while the discriminator keeps the images realistic. The optimised
    z goes to the latent store (``latents``) under a digest that the signed image id carries (``image_ids``),
    so any worker that shares the store can regenerate the exact image;
4'. grounding re-ranked by the shopper's score (the ranker's candidates first), each item once per set.
Sets are cached per (shopper, session state, n, neighbours, filters) for the life of the bundle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import secrets
from pathlib import Path

import numpy as np
import torch

from engine.artifacts.bundle import Bundle
from engine.artifacts.registry import BundleRefused
from engine.serving.cache import LruCache
from engine.serving.catalogue import Catalogue
from engine.serving.choosing import choose_and_optimise, reason
from engine.serving.conditions import ConditionModel, ShopperVectors
from engine.serving.config import PersonaliserConfig
from engine.serving.enhance import Enhancer
from engine.serving.grounding import Grounder
from engine.serving.image_ids import ImageIdCodec, stable_seed
from engine.serving.latents import (
    LatentStore,
    LatentStoreUnavailable,
    MemoryLatentStore,
    latent_bytes,
    latent_from_bytes,
)
from engine.serving.limits import AdmissionGate
from engine.serving.preference import ImageGenerator, PreferenceOptimiser, min_pairwise_distance
from engine.serving.products import NewProducts, ProductImages
from engine.serving.ranker import Ranking, ShopperRanker
from engine.serving.sessions import SessionEvent
from engine.serving.tagging import Tagger
from engine.serving.types import Explanation, GeneratedImage, ImageSet, UnknownImage
from models.pixels import to_png

logger = logging.getLogger(__name__)
#: Images G(z, c), their raw classifier features and those features at unit length (``ImageGenerator.render``).


def _nameable(bundle: Bundle) -> tuple[int, ...] | None:
    """The attributes' cardinalities when image ids can name every combination of values (fewer than 10^9 with
    the catalogue's own conditions), else None: new-product images are then made only of catalogue conditions."""
    cards = bundle.encoder.cardinalities
    if math.prod(cards) + len(bundle.codes) < 10**9:
        return cards
    logger.warning(
        "bundle %s: %d attribute combinations, too many to name in image ids", bundle.version, math.prod(cards)
    )
    return None


def session_key(session: list[SessionEvent] | None) -> str:
    """A digest of the session's events: the set cache must miss as soon as the session changes."""
    if not session:
        return ""
    text = "|".join(f"{e.item_id},{e.event_type},{e.timestamp.isoformat()}" for e in session)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


class Personaliser:
    """One bundle's image sets and images, composed of its parts (each a public attribute).

    ``key`` signs the image ids (default: a random key, so ids are valid for this Personaliser only);
    ``latents`` keeps the optimised latent codes their ids refer to (default: in this process);
    ``ranker_folder`` is the ranker to load (default: the bundle's ``ranker/``; evaluations pass one refitted
    on their training days). Workers that must render each other's ids share the key and the latent store
    (``Service`` passes them).
    """

    def __init__(
        self,
        bundle: Bundle,
        config: PersonaliserConfig | None = None,
        *,
        key: bytes | None = None,
        latents: LatentStore | None = None,
        ranker_folder: Path | None = None,
        gate: AdmissionGate | None = None,
    ) -> None:
        self.bundle = bundle
        self.gate = gate or AdmissionGate(max_running=None)  # generation's admission (Service shares one)
        self.config = config or PersonaliserConfig()
        self.catalogue = Catalogue(bundle)
        self.shoppers = ShopperVectors(bundle)
        self.conditions = ConditionModel(bundle, top_items=self.config.top_items)
        self.generator = ImageGenerator(bundle)
        self.preference = PreferenceOptimiser(bundle, self.config)
        self.grounding = Grounder(bundle, self.catalogue, self.config)
        self.ranker = self._load_ranker(ranker_folder or bundle.path / "ranker") if self.config.ranker else None
        self.enhancer = Enhancer.of_bundle(bundle)  # the served sizes (super-resolution) and restoration
        self.ids = ImageIdCodec(  # naming every combination of values (_nameable): new products' images too
            bundle.version, self.conditions.codes, key or secrets.token_bytes(32), cardinalities=_nameable(bundle)
        )
        self.tagger = Tagger.from_bundle(bundle)
        self.products = NewProducts(
            bundle, self.generator, self.grounding, self.ids, self.tagger, self.config, self.gate
        )
        self.latents: LatentStore = latents if latents is not None else MemoryLatentStore()
        self._pngs: LruCache[bytes] = LruCache(self.config.cache_size)
        # each set with the latent codes its ids refer to, written again whenever the set is served
        self._sets: LruCache[tuple[ImageSet, dict[str, bytes]]] = LruCache(self.config.set_cache_size)

    @property
    def version(self) -> str:
        return self.bundle.version

    def knows(self, user_id: str) -> bool:
        """Whether the bundle holds this shopper (their embedding, or the ranker's history)."""
        return self.bundle.embeddings.user_index(user_id) >= 0 or (
            self.ranker is not None and self.ranker.knows(user_id)
        )

    def forget_cached(self, user_ids: list[str]) -> dict[str, int]:
        """Drop the sets cached for these shoppers, with their images' PNGs; the latent codes the sets refer to
        are answered so that the caller can delete them from a shared latent store."""
        wanted = set(user_ids)
        dropped = self._sets.discard_where(lambda key, _: isinstance(key, tuple) and key[0] in wanted)
        images = [img.image_id for result, _ in dropped for img in result.images]
        ids = set(images)  # each image's PNGs at every size: keyed by its id, or by (id, factor)
        pngs = len(self._pngs.discard_where(lambda key, _: (key[0] if isinstance(key, tuple) else key) in ids))
        latents = sorted({k for _, codes in dropped for k in codes})
        deleted = self.latents.delete_many(latents) if latents else 0
        return {"cached_sets": len(dropped), "cached_images": pngs, "latent_codes": deleted}

    def _load_ranker(self, folder: Path) -> ShopperRanker | None:
        if not folder.is_dir():  # bundles trained before the ranker was part of them
            logger.warning("bundle %s has no ranker; shoppers are ranked by the embeddings", self.version)
            return None
        try:
            return ShopperRanker.load(folder)
        except Exception as exc:  # any failure to read it refuses the bundle, never the request
            raise BundleRefused(f"bundle {self.version} refused: its ranker failed to load ({exc})") from exc

    def rank(self, user_id: str, session: list[SessionEvent] | None = None) -> Ranking | None:
        """The shopper's ranked candidates from the bundle's ranker; None without a ranker or any evidence."""
        return self.ranker.rank(user_id, session) if self.ranker is not None else None

    def condition_distribution(
        self, vector: np.ndarray | None, ranking: Ranking | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(p(condition | shopper), support) as sets are drawn: from the ranker's top ``top_items`` where it ranked
        the shopper, else from the embeddings' (catalogue popularity without a vector)."""
        if ranking is not None:
            top = self._top(ranking, self.config.top_items)
            return self.conditions.of_items(np.array([self.catalogue.rows.get(i, -1) for i in top]))
        return self.conditions.distribution(vector), self.conditions.support(vector)

    def _top(self, ranking: Ranking | None, k: int) -> list[str]:
        """The ranker's first k for a shopper, filled with its recent best sellers (those alone without a
        ranking)."""
        assert self.ranker is not None
        fill = self.ranker.popular
        return ranking.top(k, fill) if ranking is not None else [str(i) for i in fill[:k]]

    def recommended_items(self, user_id: str, k: int, *, session: list[SessionEvent] | None = None) -> list[str]:
        """The shopper's top-k item ids as serving ranks them: the ranker's (filled with recent best sellers),
        or without a ranker the embeddings' u · v (popular items for a shopper without a vector)."""
        if self.ranker is not None:
            return self._top(self.ranker.rank(user_id, session), k)
        vector, _ = self._shopper(user_id, session)
        emb = self.bundle.embeddings
        if vector is None:
            return [str(i) for i in self.catalogue.item_ids[np.argsort(-self.catalogue.popularity, kind="stable")[:k]]]
        top, _ = emb.recommend(vector, k)
        return [str(i) for i in emb.item_ids[top]]

    def _shopper(self, user_id: str, session: list[SessionEvent] | None) -> tuple[np.ndarray | None, str]:
        """The shopper's vector and the strategy it implies (``session``, ``personalised`` or ``cold_start``)."""
        if session:
            vector = self.shoppers.session_vector(user_id, session)
            if self.shoppers.knows_any(session):
                return vector, "session"
        else:
            vector = self.shoppers.user_vector(user_id)
        return vector, "personalised" if vector is not None else "cold_start"

    def image_set(
        self,
        user_id: str,
        n: int = 8,
        *,
        neighbours: int = 4,
        session: list[SessionEvent] | None = None,
        classes: list[str] | tuple[str, ...] | None = None,
        in_stock_only: bool = True,
        optimise: bool | None = None,
    ) -> ImageSet:
        """n generated images for a shopper; ``session`` events (if any) are folded in first.

        Strategy: ``session`` when session events shaped the vector, ``personalised`` for a stored shopper,
        ``cold_start`` otherwise. The condition draw is seeded by the shopper and the session's length, so
        the set is stable between events and changes as soon as a new event arrives. ``classes`` limits the
        generated and the grounded items to those classes. ``optimise`` (default: whenever the bundle and the
        shopper allow) switches preference maximisation and the candidate pool on or off.
        """
        cfg = self.config
        if not 1 <= n <= cfg.max_set_size:
            raise ValueError(f"n must be between 1 and {cfg.max_set_size}; got {n}")
        if not 1 <= neighbours <= cfg.max_neighbours:
            raise ValueError(f"neighbours must be between 1 and {cfg.max_neighbours}; got {neighbours}")
        allowed = self.catalogue.allowed_classes(classes)
        key = (user_id, session_key(session), n, neighbours, allowed, in_stock_only, optimise)
        hit = self._sets.get(key)
        if hit is not None:
            self._keep_latents(hit[1])
            return dataclasses.replace(hit[0], cached=True)
        vector, strategy = self._shopper(user_id, session)
        ranking = self.rank(user_id, session)
        if ranking is not None and strategy == "cold_start":  # a new shopper whose session only the ranker knows
            strategy = "session"
        p, support = self.condition_distribution(vector, ranking)
        p = self.conditions.restrict(p, allowed)
        use_opt = self.preference.available and vector is not None and (optimise is None or optimise)
        m = n * cfg.pool_factor if use_opt else n
        chosen = self.conditions.choose(p, m, stable_seed(user_id, self.version, "conditions", len(session or ())))
        codes = self.conditions.codes[chosen]
        seeds = [stable_seed(user_id, self.version, slot) for slot in range(m)]
        z = self.generator.latents(seeds)
        pref0, rendered = None, None
        with self.gate.admit():  # the costly part: Overloaded when too many run and wait already
            if use_opt:
                assert vector is not None
                pick, z, pref0, rendered = choose_and_optimise(
                    self.generator, self.preference, cfg, vector, codes, z, p[chosen], n
                )
            else:
                pick = np.arange(n)
            images, raw, unit = rendered or self.generator.render(z, codes[pick])
            pixels = self.generator.pixels(z, codes[pick]) if cfg.render_pngs else None  # one at a time: render_png's
        chosen, codes, seeds = chosen[pick], codes[pick], [seeds[j] for j in pick]
        pref = None
        if vector is not None and self.preference.visual is not None:
            pref = self.preference.scores(vector, raw, codes)
        real = self.preference.realism(images, codes) if use_opt else None
        min_dist = min_pairwise_distance(unit)
        nearest = self.grounding.nearest_items(
            None,
            neighbours,
            features=unit,
            user_vector=vector,
            ranking=ranking,
            classes=allowed,
            in_stock_only=in_stock_only,
            distinct=cfg.distinct_grounding,
            conditions=codes if cfg.condition_grounding else None,
        )
        # the optimised codes are kept server-side, under keys that their ids carry
        latents = {self.ids.latent_key(zi): latent_bytes(zi) for zi in z.numpy()} if use_opt else {}
        latent_keys: list[str | None] = [self.ids.latent_key(zi) for zi in z.numpy()] if use_opt else [None] * n
        self._keep_latents(latents)
        out = []
        for slot in range(n):
            image_id = self.ids.encode(int(chosen[slot]), seeds[slot], latent_keys[slot])
            if pixels is not None:
                self._pngs.put(image_id, to_png(pixels[slot]))
            condition = self.bundle.encoder.decode(codes[slot])
            prob, support_c = float(p[chosen[slot]]), int(support[chosen[slot]])
            score = None if pref is None else float(pref[slot])
            score0 = None if pref0 is None else float(pref0[slot])
            explanation = Explanation(
                condition_probability=prob,
                condition_support=support_c,
                preference_score=score,
                preference_score_unoptimised=score0 if use_opt else score,
                realism=None if real is None else float(real[slot]),
                optimised=use_opt,
                reason=reason(
                    self.bundle.attributes,
                    strategy,
                    condition,
                    prob,
                    support=support_c,
                    top_items=cfg.top_items,
                    basis=self.grounding.basis,
                    nearest=nearest[slot],
                    pref=score,
                    pref0=score0,
                ),
            )
            out.append(
                GeneratedImage(
                    image_id=image_id,
                    slot=slot,
                    condition=condition,
                    score=prob,
                    nearest=nearest[slot],
                    explanation=explanation,
                )
            )
        result = ImageSet(
            user_id=user_id,
            strategy=strategy,
            bundle_version=self.version,
            images=out,
            min_pairwise_distance=None if np.isnan(min_dist) else min_dist,
        )
        self._sets.put(key, (result, latents))
        return result

    def _keep_latents(self, latents: dict[str, bytes]) -> None:
        """Write a set's latent codes to the store. A store that fails is logged, not fatal: the set is still
        shown, and this worker renders its images from the PNG cache while they are there."""
        try:
            self.latents.put_many(latents)
        except LatentStoreUnavailable as exc:
            logger.error("image set served without storing its latent codes: %s", exc)

    def keep_rendered(self, latents: dict[str, bytes], pngs: dict[str, bytes] | None = None) -> None:
        """Keep a set made elsewhere (precomputed) renderable: its latent codes in the store, its PNGs in the cache."""
        self._keep_latents(latents)
        self._pngs.put_many((pngs or {}).items())

    def image_inputs(self, image_id: str) -> tuple[np.ndarray, int, np.ndarray | None]:
        """(condition codes (n_attributes,), noise seed, optimised latent code (z_dim,) or None) of an image id:
        what the generator needs to make its image again.

        UnknownImage, saying what to do, when the id is not one this bundle issued, or when its latent code is
        no longer in the store (evicted or expired, or kept by another worker without a shared store).
        LatentStoreUnavailable when a shared store does not answer."""
        ref = self.ids.decode(image_id)
        if ref.latent is None:
            return ref.codes, ref.seed, None
        raw = self.latents.get(ref.latent)
        z = None if raw is None else latent_from_bytes(raw, self.generator.z_dim)
        if z is None or self.ids.latent_key(z) != ref.latent:
            raise UnknownImage(f"image {image_id} has expired; request a new image set")
        return ref.codes, ref.seed, z

    def new_product_images(
        self,
        values: dict[str, str],
        n: int,
        *,
        seed: int = 0,
        neighbours: int = 4,
        in_stock_only: bool = True,
    ) -> ProductImages:
        """n images of an attribute combination, in the catalogue or not (``products.NewProducts``); their PNGs
        are cached for ``/v1/images/{id}.png``. ValueError says what to change in the request."""
        result, pngs = self.products.images(values, n, seed=seed, neighbours=neighbours, in_stock_only=in_stock_only)
        for image, png in zip(result.images, pngs, strict=True):
            self._pngs.put(image.image_id, png)
        return result

    def render_png(self, image_id: str, size: int | None = None) -> bytes:
        """The PNG of an image id at ``size`` px (``enhancer.sizes``; SizeUnavailable for others): from the cache, or
        regenerated from the id (and its stored latent code), upscaled by the bundle's super-resolution."""
        factor = self.enhancer.factor(size)
        key = image_id if factor == 1 else (image_id, factor)
        cached = self._pngs.get(key)
        if cached is not None:
            return cached
        codes, seed, z = self.image_inputs(image_id)
        latent = None if z is None else torch.from_numpy(z)[None]
        with self.gate.admit():
            pixels = self.generator.pixels(self.generator.latents([seed]) if latent is None else latent, codes[None, :])
            png = to_png(self.enhancer.upscale(pixels, factor)[0])
        self._pngs.put(key, png)
        return png
