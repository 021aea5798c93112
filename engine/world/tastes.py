"""Hidden shopper tastes: what each simulated shopper likes, as a reusable model.

A :class:`Taste` holds one probability vector per catalogue attribute (class, colour, pattern), a price
sensitivity and an activity level. It is the ground truth behind the demo store's logs: the log simulator
chooses items with probability proportional to ``exp(utility)``, evaluation compares recommendations with
:meth:`Taste.top`, and an A/B simulator can turn :meth:`Taste.affinity` into a click probability.

The choice model is a multinomial logit whose utility is a sum of log-preferences::

    utility(item) = log w_class[c] + log w_colour[k] + log w_pattern[p]
                    - price_sensitivity * log(price / median price of the item's class)

so that, among equally priced items, a shopper picks an item in proportion to the product of their
weights for its class, colour and pattern.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from engine.world.art import CLASSES, COLOURS, PATTERNS

ATTRIBUTES: tuple[str, ...] = ("class", "colour", "pattern")
#: attribute name → its values, in the order of a :class:`Taste`'s weight vectors.
VOCABULARIES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"class": CLASSES, "colour": tuple(COLOURS), "pattern": PATTERNS}
)
_FIELDS = {"class": "class_", "colour": "colour", "pattern": "pattern"}
_WEIGHT_TOLERANCE = 1e-6


@dataclass(frozen=True, kw_only=True, eq=False)
class Taste:
    """One shopper's hidden preferences.

    ``class_``, ``colour`` and ``pattern`` are probability vectors (non-negative, summing to 1) aligned with
    ``VOCABULARIES["class"]`` (= :data:`~engine.world.art.CLASSES`), ``VOCABULARIES["colour"]`` and
    ``VOCABULARIES["pattern"]``; they are stored as read-only float64 arrays. ``price_sensitivity`` (≥ 0)
    is the elasticity in the utility's price term; ``activity`` (≥ 0) is the expected number of
    browsing sessions per week.
    """

    class_: np.ndarray  # (len(CLASSES),)
    colour: np.ndarray  # (len(COLOURS),)
    pattern: np.ndarray  # (len(PATTERNS),)
    price_sensitivity: float
    activity: float

    def __post_init__(self) -> None:
        for attribute, name in _FIELDS.items():
            values = np.array(getattr(self, name), dtype=np.float64)
            size = len(VOCABULARIES[attribute])
            if values.shape != (size,):
                raise ValueError(f"Taste.{name} must hold {size} weights (one per {attribute}); got {values.shape}")
            if not np.isfinite(values).all() or (values < 0).any():
                raise ValueError(f"Taste.{name} weights must be finite and non-negative; got {values.tolist()}")
            if abs(values.sum() - 1.0) > _WEIGHT_TOLERANCE:
                raise ValueError(f"Taste.{name} weights must sum to 1; they sum to {values.sum():.8f}")
            values.flags.writeable = False
            object.__setattr__(self, name, values)
        for name in ("price_sensitivity", "activity"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"Taste.{name} must be a finite number ≥ 0; got {value!r}")
            object.__setattr__(self, name, float(value))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Taste):
            return NotImplemented
        return (
            all(np.array_equal(getattr(self, f), getattr(other, f)) for f in _FIELDS.values())
            and self.price_sensitivity == other.price_sensitivity
            and self.activity == other.activity
        )

    __hash__ = None  # type: ignore[assignment]  # holds arrays; equal tastes need not share an identity

    def weights(self, attribute: str) -> np.ndarray:
        """The probability vector of ``attribute`` ("class", "colour" or "pattern"), in vocabulary order."""
        return getattr(self, _FIELDS[_check_attribute(attribute)])

    def utility(self, items: pd.DataFrame, *, reference_prices: Mapping[str, float] | None = None) -> np.ndarray:
        """Utility of each row of ``items`` (columns class, colour, pattern, price); shape (len(items),).

        The price term compares each price with the median price of its class in ``reference_prices``
        (class → price); by default those medians are taken from ``items`` itself, so pass the whole
        catalogue, or the catalogue's :func:`class_median_prices`, when scoring a subset.
        """
        return utilities([self], items, reference_prices=reference_prices)[0]

    def affinity(self, condition: Mapping[str, str]) -> float:
        """How well a condition (e.g. ``{"class": "dress", "colour": "red", "pattern": "dots"}``) suits the
        shopper, in [0, 1].

        It is the product over the given attributes of ``w[value] / max(w)``: 1 when every given value is
        the shopper's favourite, and ``exp`` of the utility gap to their favourite combination otherwise
        (the price term left out, as a shown image has no price). Attributes left out do not count.
        """
        if not condition:
            raise ValueError("a condition needs at least one of the attributes class, colour, pattern")
        score = 1.0
        for attribute, value in condition.items():
            w = self.weights(attribute)
            score *= float(w[_index(attribute, value)] / w.max())
        return score

    def top(self, attribute: str, k: int) -> list[str]:
        """The shopper's ``k`` favourite values of ``attribute``, most liked first (ties in vocab order)."""
        vocab = VOCABULARIES[_check_attribute(attribute)]
        if not 1 <= k <= len(vocab):
            raise ValueError(f"k must be between 1 and {len(vocab)} for {attribute}; got {k}")
        order = np.argsort(-self.weights(attribute), kind="stable")[:k]
        return [vocab[i] for i in order]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: each attribute as {value: weight}, plus price_sensitivity and activity."""
        out: dict[str, Any] = {
            attribute: dict(zip(VOCABULARIES[attribute], self.weights(attribute).tolist(), strict=True))
            for attribute in ATTRIBUTES
        }
        out["price_sensitivity"] = self.price_sensitivity
        out["activity"] = self.activity
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Taste:
        """Inverse of :meth:`to_dict`; unknown or missing keys and values are errors."""
        expected = {*ATTRIBUTES, "price_sensitivity", "activity"}
        if set(data) != expected:
            raise ValueError(
                f"a taste has exactly the keys {sorted(expected)}; missing {sorted(expected - set(data))}, "
                f"unknown {sorted(set(data) - expected)}"
            )
        arrays = {}
        for attribute in ATTRIBUTES:
            weights = data[attribute]
            vocab = VOCABULARIES[attribute]
            if not isinstance(weights, Mapping) or set(weights) != set(vocab):
                raise ValueError(f"taste[{attribute!r}] must map each of {list(vocab)} to a weight; got {weights!r}")
            arrays[_FIELDS[attribute]] = np.array([weights[v] for v in vocab], dtype=np.float64)
        return cls(**arrays, price_sensitivity=data["price_sensitivity"], activity=data["activity"])


@dataclass(frozen=True, kw_only=True)
class TastePrior:
    """How a population of tastes is drawn (see :func:`draw_tastes`).

    Popularity: one population-level probability vector per attribute, ``Dirichlet(popularity_concentration)``
    in every component, so some classes and colours are more popular overall (larger = more even).
    Individuals: ``Dirichlet(K * concentration * popularity)`` per attribute of K values; a concentration
    well below 1 gives most shoppers one to three clear favourites. Each vector is then mixed with the
    popularity, ``(1 - floor) * w + floor * popularity``, so nothing is strictly impossible for anyone.
    ``price_sensitivity ~ Gamma(shape, scale)``;
    ``activity ~ LogNormal(log(activity_median), activity_sigma)`` sessions per week (heavy-tailed: a few
    shoppers browse far more than most).
    """

    popularity_concentration: float = 6.0
    class_concentration: float = 0.3
    colour_concentration: float = 0.3
    pattern_concentration: float = 0.5
    floor: float = 0.05
    price_sensitivity_shape: float = 2.0
    price_sensitivity_scale: float = 0.5
    activity_median: float = 0.7
    activity_sigma: float = 1.0

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"TastePrior.{name} must be a positive number; got {value!r}")
        if self.floor >= 1:
            raise ValueError(f"TastePrior.floor must be below 1; got {self.floor}")


def draw_tastes(
    n_users: int,
    rng: np.random.Generator,
    prior: TastePrior | None = None,
    *,
    popularity: Mapping[str, np.ndarray] | None = None,
) -> list[Taste]:
    """Draw ``n_users`` tastes from ``prior`` (defaults: :class:`TastePrior`); the same rng state gives the
    same population.

    ``popularity`` (attribute → probability vector, e.g. :func:`taste_popularity` of an existing population)
    replaces the population-level vectors that are otherwise drawn first: new shoppers of that population.
    """
    if n_users < 0:
        raise ValueError(f"n_users must be ≥ 0; got {n_users}")
    prior = prior or TastePrior()
    if popularity is not None:
        for attribute in ATTRIBUTES:
            given = np.asarray(popularity.get(attribute, ()), dtype=np.float64)
            size = len(VOCABULARIES[attribute])
            if given.shape != (size,) or (given < 0).any() or abs(given.sum() - 1.0) > _WEIGHT_TOLERANCE:
                raise ValueError(f"popularity[{attribute!r}] must be {size} non-negative weights summing to 1")
    concentration = {
        "class": prior.class_concentration,
        "colour": prior.colour_concentration,
        "pattern": prior.pattern_concentration,
    }
    weights = {}
    for attribute in ATTRIBUTES:
        k = len(VOCABULARIES[attribute])
        if popularity is None:
            shared = rng.dirichlet(np.full(k, prior.popularity_concentration))
        else:
            shared = np.asarray(popularity[attribute], dtype=np.float64)
        w = rng.dirichlet(k * concentration[attribute] * shared, size=n_users)
        w = (1 - prior.floor) * w + prior.floor * shared
        weights[attribute] = w / w.sum(axis=1, keepdims=True)
    price = rng.gamma(prior.price_sensitivity_shape, prior.price_sensitivity_scale, size=n_users)
    activity = rng.lognormal(math.log(prior.activity_median), prior.activity_sigma, size=n_users)
    return [
        Taste(
            class_=weights["class"][u],
            colour=weights["colour"][u],
            pattern=weights["pattern"][u],
            price_sensitivity=float(price[u]),
            activity=float(activity[u]),
        )
        for u in range(n_users)
    ]


def taste_popularity(tastes: Sequence[Taste]) -> dict[str, np.ndarray]:
    """The mean weights of each attribute over ``tastes``: an estimate of the popularity vectors they were drawn
    with (each taste of :func:`draw_tastes` has the popularity as its expectation), to draw more of their kind."""
    if not tastes:
        raise ValueError("taste_popularity needs at least one taste")
    return {a: np.mean([t.weights(a) for t in tastes], axis=0) for a in ATTRIBUTES}


def class_median_prices(items: pd.DataFrame) -> dict[str, float]:
    """Median price per class of a catalogue: the reference of the utility's price term."""
    return {str(k): float(v) for k, v in items.groupby("class", sort=True)["price"].median().items()}


def attribute_codes(items: pd.DataFrame, attribute: str) -> np.ndarray:
    """Vocabulary index of each row's ``attribute`` value; an unknown value is an error naming it."""
    vocab = VOCABULARIES[_check_attribute(attribute)]
    if attribute not in items.columns:
        raise ValueError(f"items lack the column {attribute!r}; expected columns class, colour, pattern, price")
    codes = pd.Categorical(items[attribute], categories=list(vocab)).codes.astype(np.int64)
    if (codes < 0).any():
        unknown = sorted(set(items[attribute][codes < 0].astype(str)))
        raise ValueError(f"unknown {attribute} values {unknown[:10]}; expected one of {list(vocab)}")
    return codes


def utilities(
    tastes: Sequence[Taste], items: pd.DataFrame, *, reference_prices: Mapping[str, float] | None = None
) -> np.ndarray:
    """Utility of every item for every taste, shape (len(tastes), len(items)); see :meth:`Taste.utility`."""
    if "price" not in items.columns:
        raise ValueError("items lack the column 'price'; expected columns class, colour, pattern, price")
    reference = class_median_prices(items) if reference_prices is None else dict(reference_prices)
    missing = sorted(set(items["class"].astype(str)) - set(reference))
    if missing:
        raise ValueError(f"reference_prices has no price for the classes {missing}")
    price = items["price"].to_numpy(dtype=np.float64)
    if not (np.isfinite(price) & (price > 0)).all():
        raise ValueError("every item needs a positive price to be scored")
    rel_log_price = np.log(price / items["class"].map(reference).to_numpy(dtype=np.float64))
    out = np.zeros((len(tastes), len(items)))
    if not tastes:
        return out
    for attribute in ATTRIBUTES:
        codes = attribute_codes(items, attribute)
        with np.errstate(divide="ignore"):  # a zero weight is a utility of -inf: never chosen
            out += np.log(np.stack([t.weights(attribute) for t in tastes]))[:, codes]
    sensitivity = np.array([t.price_sensitivity for t in tastes], dtype=np.float64)
    return out - sensitivity[:, None] * rel_log_price[None, :]


def best_utility(tastes: Sequence[Taste]) -> np.ndarray:
    """Each taste's utility for its favourite combination at its class median price; shape (len(tastes),)."""
    return np.array([sum(math.log(t.weights(a).max()) for a in ATTRIBUTES) for t in tastes])


def _check_attribute(attribute: str) -> str:
    if attribute not in VOCABULARIES:
        raise ValueError(f"unknown attribute {attribute!r}; expected one of {', '.join(ATTRIBUTES)}")
    return attribute


def _index(attribute: str, value: str) -> int:
    vocab = VOCABULARIES[_check_attribute(attribute)]
    try:
        return vocab.index(value)
    except ValueError:
        raise ValueError(f"unknown {attribute} {value!r}; expected one of {', '.join(vocab)}") from None
