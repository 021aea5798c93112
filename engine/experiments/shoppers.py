"""Simulated shoppers for experiments: hidden tastes, what they are shown, and how they respond.

Each simulated shopper (a :class:`SimShopper`: a unit id, a :class:`~engine.world.Taste`, a propensity and an
arrival time) visits once. The visit shows a set of images, each with its condition (class, colour, pattern).
The set's match is the mean :meth:`Taste.affinity` of its conditions, m ∈ [0, 1], and (see
:class:`ShopperResponse`)::

    P(click)     = min(1, propensity × (click_base + click_slope × m))
    P(purchase)  = P(click) × cart_given_click × purchase_given_cart

so conversion rises with how well the images shown suit the shopper. Purchases before the experiment (the
pre-period, a Poisson number with mean ``propensity × pre_period_rate``) give CUPED its covariate.

:func:`run_shoppers` runs shoppers through any ``visit`` (what each was shown) and ``sink`` (where their
events go): in process (:mod:`engine.experiments.simulation`, sets from :func:`oracle_show`) or through the
HTTP API (:mod:`engine.experiments.http_simulation`: ``visit`` calls the image-set endpoint, which assigns
and records the exposure, and ``sink`` posts to ``/v1/events``); pass a ``show(unit_id, variant)`` able to
fetch either variant's set to know the true lift.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from engine.experiments.eventstore import Event
from engine.experiments.report import DAY_S
from engine.world.tastes import ATTRIBUTES, VOCABULARIES, Taste

Condition = Mapping[str, str]
ShowFn = Callable[[str, str], Sequence[Condition]]
EventSink = Callable[[list[Event]], object]
SIM_START = datetime(2024, 3, 4, tzinfo=UTC)


@dataclass(frozen=True, kw_only=True)
class ShopperResponse:
    """How a shopper responds to a shown set (module docstring). The defaults give a conversion rate of about
    3-4% with popular images and about twice that with images drawn from the shopper's own taste."""

    click_base: float = 0.06
    click_slope: float = 0.5
    cart_given_click: float = 0.5
    purchase_given_cart: float = 0.5
    revenue_median: float = 40.0
    revenue_sigma: float = 0.6
    pre_period_rate: float = 1.0
    propensity_sigma: float = 0.8

    def __post_init__(self) -> None:
        for name in ("click_base", "cart_given_click", "purchase_given_cart"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"ShopperResponse.{name} must be a probability; got {getattr(self, name)}")
        for name in ("click_slope", "revenue_median", "revenue_sigma", "pre_period_rate", "propensity_sigma"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"ShopperResponse.{name} must be ≥ 0; got {getattr(self, name)}")

    def click_probability(self, match: float, propensity: float) -> float:
        return min(1.0, propensity * (self.click_base + self.click_slope * match))

    def conversion_probability(self, match: float, propensity: float) -> float:
        return self.click_probability(match, propensity) * self.cart_given_click * self.purchase_given_cart


@dataclass(frozen=True, kw_only=True)
class SimShopper:
    unit_id: str
    taste: Taste
    propensity: float
    arrival_ts: float  # epoch seconds


@dataclass(frozen=True, kw_only=True)
class Shown:
    """What one visit showed: the unit's variant (None: not in the experiment) and the images, each with its
    condition and optionally its image id and nearest catalogue item."""

    variant: str | None
    conditions: Sequence[Condition]
    image_ids: Sequence[str] = ()
    item_ids: Sequence[str | None] = ()


VisitFn = Callable[[Sequence[SimShopper]], list[Shown]]


@dataclass
class RunOutcome:
    """What one simulated experiment did: units exposed and converting per variant, and the truth.

    ``true_rates`` (when a counterfactual ``show`` was given) is, per variant, the mean conversion probability
    of every simulated shopper had they all been shown that variant: the sample's true conversion rate.
    ``seen_rates`` is the mean conversion probability of the shoppers actually in each variant.
    """

    exposed: dict[str, int] = field(default_factory=dict)
    converted: dict[str, int] = field(default_factory=dict)
    seen_rates: dict[str, float] = field(default_factory=dict)
    true_rates: dict[str, float] | None = None
    events: int = 0

    def true_lift(self, variant: str, control: str) -> tuple[float, float] | None:
        """(absolute, relative) true lift of ``variant`` over ``control``, if the truth is known."""
        if self.true_rates is None:
            return None
        t, c = self.true_rates[variant], self.true_rates[control]
        return t - c, (t / c - 1 if c > 0 else math.nan)


# -------------------------------------------------------------------------------------------------- shoppers


def make_shoppers(
    tastes: Sequence[Taste] | Mapping[str, Taste],
    *,
    start: datetime,
    days: float,
    seed: int,
    response: ShopperResponse | None = None,
    prefix: str = "sim",
) -> list[SimShopper]:
    """One shopper per taste, arriving uniformly in [start, start + days), ordered by arrival. A mapping's keys
    are the unit ids (use a demo store's user ids with :func:`engine.world.load_tastes` so that the API knows
    them); a sequence gets ids ``<prefix>-<i>``. Propensity = (activity / median activity) ** propensity_sigma
    clipped to [0.25, 4]: busier shoppers are likelier to click, before and during the experiment."""
    response = response or ShopperResponse()
    items = (
        list(tastes.items())
        if isinstance(tastes, Mapping)
        else [(f"{prefix}-{i:06d}", t) for i, t in enumerate(tastes)]
    )
    if not items:
        return []
    rng = np.random.default_rng([seed, 0x5B0])
    activity = np.array([t.activity for _, t in items])
    propensity = np.clip((activity / np.median(activity)) ** response.propensity_sigma, 0.25, 4.0)
    arrivals = start.timestamp() + rng.uniform(0, days * DAY_S, size=len(items))
    shoppers = [
        SimShopper(unit_id=u, taste=t, propensity=float(p), arrival_ts=float(a))
        for (u, t), p, a in zip(items, propensity, arrivals, strict=True)
    ]
    return sorted(shoppers, key=lambda s: s.arrival_ts)


# --------------------------------------------------------------------------------------------------- showing


def popular_conditions(tastes: Sequence[Taste], n: int) -> list[dict[str, str]]:
    """The ``n`` (class, colour, pattern) combinations most liked by the population on average."""
    joint = np.zeros([len(VOCABULARIES[a]) for a in ATTRIBUTES])
    for t in tastes:
        joint += np.einsum("i,j,k->ijk", *(t.weights(a) for a in ATTRIBUTES))
    order = np.argsort(-joint.ravel(), kind="stable")[:n]
    return [_condition(np.unravel_index(i, joint.shape)) for i in order]


def personal_conditions(taste: Taste, n: int, *, seed: int) -> list[dict[str, str]]:
    """``n`` distinct combinations drawn without replacement with probability ∝ the shopper's taste
    (Gumbel-top-k): what a perfect personaliser would show."""
    logits = np.log(np.einsum("i,j,k->ijk", *(taste.weights(a) for a in ATTRIBUTES)) + 1e-300)
    gumbel = np.random.default_rng(seed).gumbel(size=logits.shape)
    order = np.argsort(-(logits + gumbel).ravel())[:n]
    return [_condition(np.unravel_index(i, logits.shape)) for i in order]


def oracle_show(
    shoppers: Sequence[SimShopper], strategies: Mapping[str, str], *, n_images: int = 8, seed: int = 0
) -> ShowFn:
    """An in-process ``show(unit_id, variant)``: variants with strategy "popular" show the population's top
    combinations, "personalised" ones draw from the shopper's taste (seeded by unit, so repeatable)."""
    tastes = {s.unit_id: s.taste for s in shoppers}
    popular = popular_conditions(list(tastes.values()), n_images)

    def show(unit_id: str, variant: str) -> list[dict[str, str]]:
        strategy = strategies[variant]
        if strategy == "popular":
            return popular
        if strategy == "personalised":
            return personal_conditions(tastes[unit_id], n_images, seed=_stable_seed(seed, unit_id))
        raise ValueError(f"the simulator cannot show strategy {strategy!r}")

    return show


# --------------------------------------------------------------------------------------------------- running


def set_match(taste: Taste, conditions: Sequence[Condition]) -> float:
    """Mean affinity of the shown conditions for the shopper, in [0, 1] (0 for an empty set)."""
    return float(np.mean([taste.affinity(c) for c in conditions])) if conditions else 0.0


def run_shoppers(
    shoppers: Sequence[SimShopper],
    *,
    visit: VisitFn,
    sink: EventSink,
    response: ShopperResponse | None = None,
    seed: int = 0,
    show: ShowFn | None = None,
    variants: Sequence[str] = (),
    pre_period_days: float = 28.0,
    start: datetime | None = None,
    tag: str = "sim",
    show_progress: bool = False,
) -> RunOutcome:
    """Run ``shoppers`` (in arrival order, one day at a time) through ``visit`` and send what they do to
    ``sink``.

    ``visit(batch)`` returns what each shopper of the batch was shown (:class:`Shown`); ``sink(events)``
    stores events (in process: ``EventStore.add_events``; over HTTP: ``POST /v1/events``). With ``show`` and
    ``variants``, each shopper's conversion probability under every variant is computed too, giving the true
    rates (:class:`RunOutcome`). Pre-period purchases (``pre_period_days`` before ``start``, default the
    first arrival's day) are sent first. Event ids are ``<tag>.<unit>.<n>``, so a rerun with the same tag is
    idempotent.
    """
    response = response or ShopperResponse()
    rng = np.random.default_rng([seed, 0xAB])
    ordered = sorted(shoppers, key=lambda s: s.arrival_ts)
    outcome = RunOutcome()
    if not ordered:
        return outcome
    t0 = (start or datetime.fromtimestamp(ordered[0].arrival_ts, UTC)).timestamp()
    if pre_period_days > 0 and response.pre_period_rate > 0:
        pre = _pre_period_events(ordered, response, rng, start_s=t0, days=pre_period_days, tag=tag)
        sink(pre)
        outcome.events += len(pre)
    if show is not None and variants:
        truth = {v: 0.0 for v in variants}
        for s in ordered:
            for v in variants:
                truth[v] += response.conversion_probability(set_match(s.taste, show(s.unit_id, v)), s.propensity)
        outcome.true_rates = {v: total / len(ordered) for v, total in truth.items()}
    seen: dict[str, float] = {}
    days = np.floor((np.array([s.arrival_ts for s in ordered]) - t0) / DAY_S)
    boundaries = np.flatnonzero(np.diff(days)) + 1
    batches = np.split(np.arange(len(ordered)), boundaries)
    for idx in tqdm(batches, desc=f"{tag} days", disable=not show_progress, leave=False):
        batch = [ordered[i] for i in idx]
        shown = visit(batch)
        if len(shown) != len(batch):
            raise ValueError(f"visit returned {len(shown)} results for {len(batch)} shoppers")
        events: list[Event] = []
        for s, sh in zip(batch, shown, strict=True):
            if sh.variant is None:
                continue
            match = set_match(s.taste, sh.conditions)
            p_click = response.click_probability(match, s.propensity)
            outcome.exposed[sh.variant] = outcome.exposed.get(sh.variant, 0) + 1
            seen[sh.variant] = seen.get(sh.variant, 0.0) + response.conversion_probability(match, s.propensity)
            mine = _visit_events(s, sh, p_click, response, rng, tag)
            events += mine
            if any(e.kind == "purchase" for e in mine):
                outcome.converted[sh.variant] = outcome.converted.get(sh.variant, 0) + 1
        if events:
            sink(events)
            outcome.events += len(events)
    outcome.seen_rates = {v: seen[v] / outcome.exposed[v] for v in seen}
    return outcome


def _visit_events(
    s: SimShopper, shown: Shown, p_click: float, response: ShopperResponse, rng: np.random.Generator, tag: str
) -> list[Event]:
    if not shown.conditions or rng.random() >= p_click:
        return []
    affinities = np.array([s.taste.affinity(c) for c in shown.conditions]) + 1e-9
    i = int(rng.choice(len(affinities), p=affinities / affinities.sum()))
    cond = shown.conditions[i]
    image_id = shown.image_ids[i] if i < len(shown.image_ids) else f"sim-image-{i}"
    item_id = (shown.item_ids[i] if i < len(shown.item_ids) else None) or "sim-" + "-".join(
        cond.get(a, "any") for a in ATTRIBUTES
    )
    common = {"user_id": s.unit_id, "session_id": f"{s.unit_id}.s1"}
    ts = s.arrival_ts + 5.0
    events = [
        Event(
            client_event_id=f"{tag}.{s.unit_id}.click",
            kind="click",
            ts=ts,
            image_id=image_id,
            item_id=item_id,
            **common,
        )
    ]
    if rng.random() < response.cart_given_click:
        events.append(
            Event(client_event_id=f"{tag}.{s.unit_id}.cart", kind="add_to_cart", ts=ts + 30, item_id=item_id, **common)
        )
        if rng.random() < response.purchase_given_cart:
            revenue = round(float(response.revenue_median * rng.lognormal(0.0, response.revenue_sigma)), 2)
            events.append(
                Event(
                    client_event_id=f"{tag}.{s.unit_id}.buy",
                    kind="purchase",
                    ts=ts + 90,
                    item_id=item_id,
                    revenue=revenue,
                    **common,
                )
            )
    return events


def _pre_period_events(
    shoppers: Sequence[SimShopper],
    response: ShopperResponse,
    rng: np.random.Generator,
    *,
    start_s: float,
    days: float,
    tag: str,
) -> list[Event]:
    events = []
    counts = rng.poisson([s.propensity * response.pre_period_rate for s in shoppers])
    for s, k in zip(shoppers, counts, strict=True):
        for j in range(int(k)):
            events.append(
                Event(
                    client_event_id=f"{tag}.{s.unit_id}.pre{j}",
                    kind="purchase",
                    ts=start_s - float(rng.uniform(60, days * DAY_S)),
                    user_id=s.unit_id,
                    session_id=f"{s.unit_id}.pre{j}",
                    item_id="sim-pre-period",
                    revenue=round(float(response.revenue_median * rng.lognormal(0.0, response.revenue_sigma)), 2),
                )
            )
    return events


def _condition(index: tuple[Any, ...]) -> dict[str, str]:
    return {a: VOCABULARIES[a][int(i)] for a, i in zip(ATTRIBUTES, index, strict=True)}


def _stable_seed(seed: int, unit_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}.{unit_id}".encode()).digest()[:8], "little")
