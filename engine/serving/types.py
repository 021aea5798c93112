"""What serving answers: image sets, their images and grounded items, and the errors a request can meet."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from features.ids import MAX_ID_LENGTH

#: Prefix of the image id of a catalogue photo shown in a popular set (``catalogue.<item_id>``).
CATALOGUE_IMAGE_PREFIX = "catalogue."


def catalogue_image_id(item_id: str) -> str:
    """``catalogue.<item_id>``; for an item id too long for that to fit ``MAX_ID_LENGTH``,
    ``catalogue.~<digest of the item id>``, so that every id a set shows is accepted wherever ids are taken."""
    image_id = CATALOGUE_IMAGE_PREFIX + item_id
    if len(image_id) <= MAX_ID_LENGTH:
        return image_id
    digest = hashlib.blake2b(item_id.encode(), digest_size=16).digest()
    return f"{CATALOGUE_IMAGE_PREFIX}~{base64.urlsafe_b64encode(digest).decode().rstrip('=')}"


class NoBundle(RuntimeError):
    """No bundle is serving yet."""


class UnknownImage(LookupError):
    """An image id that this bundle cannot render (malformed, or from another bundle)."""


class UnknownItems(ValueError):
    """Session events that name items the serving catalogue does not have."""

    def __init__(self, item_ids: list[str]) -> None:
        shown = ", ".join(item_ids[:10]) + (" …" if len(item_ids) > 10 else "")
        super().__init__(f"{len(item_ids)} event(s) name items that are not in the catalogue: {shown}")
        self.item_ids = item_ids


@dataclass(frozen=True, kw_only=True)
class NearestItem:
    item_id: str
    similarity: float
    attributes: dict[str, str]
    price: float | None
    shopper_score: float | None = None  # u · v (or u · f(image) for an item without interactions)


@dataclass(frozen=True, kw_only=True)
class Explanation:
    """Why an image was made, in terms a storefront can show a shopper."""

    condition_probability: float  # p(condition | shopper)
    condition_support: int  # how many of the shopper's top items have this condition (0 for popularity)
    preference_score: float | None  # u · f(image): the shopper's visual preference for the image shown
    preference_score_unoptimised: float | None  # the same for the image before preference maximisation
    realism: float | None  # discriminator logit, standardised (0 = a typical generated image)
    optimised: bool
    reason: str


@dataclass(frozen=True, kw_only=True)
class GeneratedImage:
    image_id: str
    slot: int
    condition: dict[str, str]
    score: float  # p(condition | shopper)
    nearest: list[NearestItem]
    explanation: Explanation | None = None


@dataclass(frozen=True, kw_only=True)
class ImageSet:
    user_id: str
    strategy: str  # "personalised", "session" or "cold_start"
    bundle_version: str
    images: list[GeneratedImage]
    min_pairwise_distance: float | None = None  # smallest cosine distance between two images' features
    cached: bool = False
    precomputed: bool = False  # served from the sets a batch job made in advance (engine.serving.precomputed)


@dataclass(frozen=True, kw_only=True)
class CatalogueImage:
    """A real catalogue photo in a popular set: its item, its condition (the item's attributes), the item's
    share of catalogue popularity, and the items to "shop similar" (the item itself first, then its visually
    nearest catalogue items by the bundle's image features)."""

    item_id: str
    slot: int
    condition: dict[str, str]
    score: float
    nearest: list[NearestItem]

    @property
    def image_id(self) -> str:
        return catalogue_image_id(self.item_id)


@dataclass(frozen=True, kw_only=True)
class PopularSet:
    """The control arm's set: catalogue photos of popular items (``Catalogue.popular_items``)."""

    user_id: str
    bundle_version: str
    images: list[CatalogueImage]
    strategy: str = "popular"


@dataclass(frozen=True, kw_only=True)
class ShownSet:
    """What a shopper was shown: the set, and the experiment and variant behind it (None: no experiment).
    ``experiment_skipped`` says why no experiment was consulted for this set when the event store failed (the
    set is then the control arm's, or the default one; see :mod:`engine.serving.arms`)."""

    images: ImageSet | PopularSet
    experiment: str | None = None
    variant: str | None = None
    exposure_id: str | None = None
    experiment_skipped: str | None = None

    @property
    def image_ids(self) -> list[str]:
        return [img.image_id for img in self.images.images]
