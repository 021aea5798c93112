"""Images of new products: an attribute combination a merchant asks for, in the catalogue or not (/v1/generate).

The generator is conditioned on one code per attribute, so it can be asked for any combination of known values,
also one that no catalogue item has: how well it renders those is measured by ``vitrine evaluate compositional``.
Each image is

- made from noise seeded by (bundle, the request's seed, slot), so the same request gives the same images, and
  another combination asked for with the same seed shows its values on the same noise; its signed id renders it
  again through ``/v1/images/{id}.png`` (``image_ids``: combinations the catalogue lacks have rows past its
  condition table);
- judged by the bundle's classifier (trained on real photos only): the probability it gives each requested value
  says how clearly the image shows it;
- grounded in the nearest real catalogue items by image features (FAISS, as image sets are), among the requested
  class's items when any passes the stock filter, so each image still leads to something buyable.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from engine.artifacts.bundle import Bundle
from engine.serving.config import PersonaliserConfig
from engine.serving.grounding import Grounder
from engine.serving.image_ids import ImageIdCodec, stable_seed
from engine.serving.limits import AdmissionGate
from engine.serving.preference import ImageGenerator
from engine.serving.tagging import Tagger
from engine.serving.types import NearestItem
from models.pixels import to_png

MAX_SHOWN_VALUES = 60  # an error lists at most this many of an attribute's known values


class UnknownAttributes(ValueError):
    """A requested combination that names unknown attributes or values, or lacks one; every problem is listed."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, kw_only=True)
class ProductImage:
    image_id: str
    slot: int
    judged: dict[str, float]  # per attribute, the classifier's probability of the requested value
    nearest: list[NearestItem]


@dataclass(frozen=True, kw_only=True)
class ProductImages:
    condition: dict[str, str]
    in_catalogue: bool  # whether any catalogue item has exactly this combination
    catalogue_items: int  # how many do
    seed: int
    bundle_version: str
    grounded_within_class: bool  # False: no item of the class passed the filters, so every class was searched
    images: list[ProductImage]


def _known(values: tuple[str, ...]) -> str:
    shown = ", ".join(values[:MAX_SHOWN_VALUES])
    return shown + (f" and {len(values) - MAX_SHOWN_VALUES} more" if len(values) > MAX_SHOWN_VALUES else "")


class NewProducts:
    """A bundle's images of requested attribute combinations (see the module)."""

    def __init__(
        self,
        bundle: Bundle,
        generator: ImageGenerator,
        grounding: Grounder,
        ids: ImageIdCodec,
        tagger: Tagger,
        config: PersonaliserConfig,
        gate: AdmissionGate,
    ) -> None:
        self.bundle = bundle
        self.encoder = bundle.encoder
        self.generator = generator
        self.grounding = grounding
        self.ids = ids
        self.tagger = tagger
        self.config = config
        self.gate = gate
        self._counts = Counter(tuple(int(v) for v in c) for c in bundle.codes)

    def codes(self, values: Mapping[str, str]) -> np.ndarray:
        """(n_attributes,) codes of a combination given as attribute → value; UnknownAttributes lists every
        attribute that is missing or unknown and every unknown value, with the known ones."""
        attrs = self.encoder.attributes
        problems = [
            f"{name!r} is not an attribute of this catalogue; its attributes are {', '.join(attrs)}"
            for name in values
            if name not in attrs
        ]
        for attr in attrs:
            known = self.encoder.values_[attr]
            if attr not in values:
                problems.append(f"{attr} is missing; known values: {_known(known)}")
            elif values[attr] not in known:
                problems.append(f"unknown {attr} {values[attr]!r}; known values: {_known(known)}")
        if problems:
            raise UnknownAttributes(problems)
        return self.encoder.encode(values)

    def in_catalogue(self, codes: np.ndarray) -> int:
        """How many catalogue items have exactly this combination."""
        return self._counts.get(tuple(int(v) for v in codes), 0)

    def images(
        self,
        values: Mapping[str, str],
        n: int,
        *,
        seed: int = 0,
        neighbours: int = 4,
        in_stock_only: bool = True,
    ) -> tuple[ProductImages, list[bytes]]:
        """n images of the combination ``values`` and their PNGs; ValueError (UnknownAttributes for the values)
        says what to change."""
        cfg = self.config
        if not 1 <= n <= cfg.max_set_size:
            raise ValueError(f"n must be between 1 and {cfg.max_set_size}; got {n}")
        if not 1 <= neighbours <= cfg.max_neighbours:
            raise ValueError(f"neighbours must be between 1 and {cfg.max_neighbours}; got {neighbours}")
        if not 0 <= seed < 1 << 63:
            raise ValueError(f"seed must be between 0 and 2^63 - 1; got {seed}")
        codes = self.codes(values)
        condition = self.encoder.decode(codes)
        row = self.ids.row_of(codes)  # ValueError when the codec cannot name a combination outside the catalogue
        # the noise does not depend on the combination: the same seed shows other values in the same poses
        seeds = [stable_seed("new product", self.bundle.version, seed, slot) for slot in range(n)]
        batch = np.repeat(codes[None, :], n, axis=0)
        with self.gate.admit():  # the costly part: Overloaded when too many generations run and wait already
            z = self.generator.latents(seeds)
            _, raw, unit = self.generator.render(z, batch)
            probabilities = self.tagger.probabilities_of_features(raw)
            pixels = self.generator.pixels(z, batch)  # one at a time, as the id alone renders them again
        attrs = self.encoder.attributes
        judged = [{a: float(probabilities[k][slot, codes[k]]) for k, a in enumerate(attrs)} for slot in range(n)]
        cls = condition[self.encoder.attributes[0]]
        catalogue = self.grounding.catalogue
        of_class = catalogue.index_class == cls
        within = bool((of_class & catalogue.index_in_stock).any() if in_stock_only else of_class.any())
        nearest = self.grounding.nearest_items(
            None, neighbours, features=unit, classes=(cls,) if within else None, in_stock_only=in_stock_only
        )
        out = [
            ProductImage(
                image_id=self.ids.encode(row, seeds[slot]), slot=slot, judged=judged[slot], nearest=nearest[slot]
            )
            for slot in range(n)
        ]
        count = self.in_catalogue(codes)
        result = ProductImages(
            condition=condition,
            in_catalogue=count > 0,
            catalogue_items=count,
            seed=seed,
            bundle_version=self.bundle.version,
            grounded_within_class=within,
            images=out,
        )
        return result, [to_png(p) for p in pixels]
