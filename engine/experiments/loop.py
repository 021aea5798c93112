"""A closed loop through the real HTTP API: shoppers with hidden tastes use the storefront day after day,
and between days an arm's model may retrain on what they did.

:func:`run_loop` drives one population of simulated shoppers through several *arms*, each a running API (its
own server, bundle registry and event store) reached by an :class:`~engine.experiments.http_api.ApiClient`.
Each arm has an optional ``nightly`` step (retrain from the arm's event store and promote; the caller supplies
it, since this room does not import training) after which the server is told to load the promoted bundle.

A day: each shopper visits with probability ``visit_rate``, at a seeded time of day. A visit is

1. ``GET /v1/users/{id}/image-set?session_id=<fresh>&at=<arrival>``;
2. the shopper looks at the images: views the first grounded item of image *i* with probability
   ``affinity(condition_i)``, and clicks with probability ``ShopperResponse.click_probability(match)`` (match =
   mean affinity of the set's conditions, as in :mod:`engine.experiments.shoppers`), choosing an image in
   proportion to its affinity; a click leads to the cart and the cart to a purchase with the response's
   probabilities, at the grounded item's catalogue price;
3. the shopper browses the catalogue: ``browse`` item views, each item drawn with probability ∝
   exp(utility) (:meth:`Taste.utility`, the demo store's choice model), whatever the storefront showed;
4. with probability ``second_set``, the visit's views, carts and purchases go to
   ``POST /v1/sessions/{session}/events`` and a second set is requested in the same session, answered as in 2.

Browsing is what lets a model learn a new shopper at all: a shopper shown nothing they like leaves no trace
of their taste in the set's events alone.

Every view, click, cart and purchase also goes to ``POST /v1/events`` (one batch per arm and day): the event
store that a nightly retrain reads. The arms see the same shoppers, the same visits at the same times and the
same random numbers (seeded by seed, shopper, day and set: common random numbers), so they differ only by what
their servers show.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from engine.experiments.eventstore import Event
from engine.experiments.http_api import ApiClient, iso_utc
from engine.experiments.report import DAY_S
from engine.experiments.shoppers import ShopperResponse, set_match
from engine.world.tastes import Taste, draw_tastes, taste_popularity, utilities

logger = logging.getLogger(__name__)

SECOND_SET_DELAY_S = 120.0  # a second set comes this long after the first


@dataclass(frozen=True, kw_only=True)
class LoopSettings:
    """``shoppers`` (a ``new_share`` of them unknown to the starting bundle) over ``days``; each visits on a
    given day with probability ``visit_rate`` and asks for a second set in the visit with ``second_set``.
    Days ``compare_from``..``days`` are pooled to compare the arms' conversion; ``catch_up`` is the share of the
    known shoppers' hidden-taste match that new shoppers should reach (by day ``catch_up_day``)."""

    days: int = 14
    shoppers: int = 200
    new_share: float = 0.5
    visit_rate: float = 0.3
    second_set: float = 0.5
    # catalogue items viewed per visit besides the sets; 5 ≈ the demo store's 5.5 views per session
    browse: int = 5
    n_images: int = 8
    neighbours: int = 4
    compare_from: int = 8
    catch_up: float = 0.8
    catch_up_day: int = 7
    seed: int = 0
    response: ShopperResponse = field(default_factory=ShopperResponse)

    def __post_init__(self) -> None:
        if self.days < 1 or self.shoppers < 2 or self.n_images < 1 or self.neighbours < 1 or self.browse < 0:
            raise ValueError("days, n_images and neighbours must be ≥ 1, shoppers ≥ 2 and browse ≥ 0")
        for name in ("new_share", "visit_rate", "second_set", "catch_up"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1]; got {getattr(self, name)}")
        if self.visit_rate == 0:
            raise ValueError("visit_rate must be above 0, or nobody visits")
        if not 1 <= self.compare_from <= self.days or self.catch_up_day < 1:
            raise ValueError(f"compare_from must be in 1..days ({self.days}) and catch_up_day ≥ 1")


@dataclass(frozen=True, kw_only=True)
class LoopShopper:
    """A simulated shopper: ``new`` ones are unknown to the starting bundle (fresh ids, tastes drawn like the
    store's); the others are store users the bundle was trained on, with their hidden tastes."""

    index: int
    user_id: str
    taste: Taste
    propensity: float
    new: bool


def make_population(known: Mapping[str, Taste], settings: LoopSettings) -> list[LoopShopper]:
    """``settings.shoppers`` shoppers: ``new_share`` of them new (ids ``loop<seed>-new-<i>``, tastes drawn with
    the popularity of the ``known`` tastes), the rest drawn without replacement from ``known`` (store users
    that the starting bundle knows). Propensity is (activity / median activity) ** propensity_sigma clipped to
    [0.25, 4], as in :func:`engine.experiments.shoppers.make_shoppers`."""
    rng = np.random.default_rng([settings.seed, 0x100F])
    n_new = round(settings.shoppers * settings.new_share)
    n_known = settings.shoppers - n_new
    if n_known > len(known):
        raise ValueError(f"{n_known} known shoppers asked for, but the store has {len(known)} known users")
    if not known:
        raise ValueError("no known users: new shoppers' tastes are drawn like the known users'")
    known_ids = sorted(rng.choice(sorted(known), size=n_known, replace=False).tolist())
    new_tastes = draw_tastes(n_new, rng, popularity=taste_popularity(list(known.values())))
    people = [(u, known[u], False) for u in known_ids]
    people += [(f"loop{settings.seed}-new-{i:05d}", t, True) for i, t in enumerate(new_tastes)]
    activity = np.array([t.activity for _, t, _ in people])
    sigma = settings.response.propensity_sigma
    propensity = np.clip((activity / np.median(activity)) ** sigma, 0.25, 4.0)
    return [
        LoopShopper(index=i, user_id=u, taste=t, propensity=float(p), new=new)
        for i, ((u, t, new), p) in enumerate(zip(people, propensity, strict=True))
    ]


@dataclass(frozen=True)
class Visit:
    """Who visits on ``day`` (1-based) and when (epoch seconds)."""

    day: int
    shopper: LoopShopper
    ts: float


def schedule(population: Sequence[LoopShopper], settings: LoopSettings, start: datetime) -> list[list[Visit]]:
    """Each day's visits, in arrival order: each shopper comes with probability ``visit_rate`` per day."""
    days = []
    for day in range(1, settings.days + 1):
        rng = np.random.default_rng([settings.seed, 0x5C4ED, day])
        comes = rng.random(len(population)) < settings.visit_rate
        at = start.timestamp() + (day - 1) * DAY_S + rng.uniform(0, DAY_S - 3 * SECOND_SET_DELAY_S, len(population))
        visits = [Visit(day, s, float(t)) for s, t, c in zip(population, at, comes, strict=True) if c]
        days.append(sorted(visits, key=lambda v: v.ts))
    return days


@dataclass
class SetSeen:
    """One set as the shopper saw it: its hidden-taste match, the server's strategy and bundle version."""

    match: float
    strategy: str
    bundle_version: str


@dataclass
class VisitOutcome:
    """What one visit of one arm showed and what the shopper did."""

    arm: str
    seed: int
    day: int
    shopper: int
    new: bool
    sets: list[SetSeen]
    purchases: int
    revenue: float
    events: int = 0  # views, clicks, carts and purchases sent to the event store

    def to_dict(self) -> dict[str, Any]:
        return {
            "arm": self.arm,
            "seed": self.seed,
            "day": self.day,
            "shopper": self.shopper,
            "new": self.new,
            "sets": [vars(s) for s in self.sets],
            "purchases": self.purchases,
            "revenue": self.revenue,
            "events": self.events,
        }


@dataclass
class Night:
    """One arm's night after ``day``: the bundle it served that day and the one it serves the next."""

    arm: str
    seed: int
    day: int
    served: str
    next: str
    seconds: float


Nightly = Callable[[], str]  # retrain and promote; returns the promoted version


class Browsing:
    """Which catalogue items each shopper views when browsing: item i with probability ∝ exp(utility_i)."""

    def __init__(self, population: Sequence[LoopShopper], catalogue: pd.DataFrame) -> None:
        self.item_ids = catalogue["item_id"].astype(str).to_numpy()
        u = utilities([s.taste for s in population], catalogue)  # (shoppers, items)
        p = np.exp(u - u.max(axis=1, keepdims=True))
        self.cumulative = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)  # (shoppers, items)
        self.row = {s.index: i for i, s in enumerate(population)}

    def items(self, shopper: LoopShopper, u: np.ndarray) -> list[str]:
        """The items viewed for the uniforms ``u`` (one per view)."""
        cdf = self.cumulative[self.row[shopper.index]]
        picks = np.minimum(np.searchsorted(cdf, u * cdf[-1], side="right"), len(cdf) - 1)
        return [str(self.item_ids[i]) for i in picks]


@dataclass
class Arm:
    """A running API and what happens to it each night (``nightly``: None for a frozen arm)."""

    name: str
    api: ApiClient
    nightly: Nightly | None = None


@dataclass
class LoopRun:
    """What :func:`run_loop` measured for one seed: every visit of every arm, and every night."""

    seed: int
    visits: list[VisitOutcome] = field(default_factory=list)
    nights: list[Night] = field(default_factory=list)
    requests: int = 0


def run_loop(
    population: Sequence[LoopShopper],
    arms: Sequence[Arm],
    settings: LoopSettings,
    *,
    catalogue: pd.DataFrame,
    start: datetime,
    show_progress: bool = False,
) -> LoopRun:
    """The closed loop (module docstring) from ``start`` for ``settings.days`` days. The arms serve each day's
    visits side by side (one thread per arm: each arm is its own server); then every arm with a ``nightly``
    step retrains and promotes, and its server loads the promoted bundle before the next day. ``catalogue``
    (item_id, class, colour, pattern, price) is what shoppers browse."""
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise ValueError(f"arm names must differ; got {names}")
    run = LoopRun(seed=settings.seed)
    days = schedule(population, settings, start)
    browsing = Browsing(population, catalogue)
    bar = tqdm(total=len(days), desc=f"seed {settings.seed} days", disable=not show_progress, leave=False)
    with ThreadPoolExecutor(max_workers=len(arms)) as pool:
        for day, visits in enumerate(days, start=1):
            jobs = [(arm, visits, settings, browsing) for arm in arms]
            for outcomes in pool.map(lambda job: _serve_day(*job), jobs):
                run.visits += outcomes
            for arm in arms:
                served = _last_version(run.visits, arm.name, day)
                if arm.nightly is None or day == settings.days:
                    continue
                t0 = time.perf_counter()
                promoted = arm.nightly()
                serving = arm.api.reload()
                if serving != promoted:
                    raise RuntimeError(f"arm {arm.name}: promoted {promoted}, but the server loaded {serving}")
                run.nights.append(Night(arm.name, settings.seed, day, served, serving, time.perf_counter() - t0))
                logger.info("arm %s, night after day %d: %s → %s", arm.name, day, served, serving)
            bar.update()
    bar.close()
    run.requests = sum(a.api.requests for a in arms)
    return run


def _last_version(visits: Sequence[VisitOutcome], arm: str, day: int) -> str:
    for v in reversed(visits):
        if v.arm == arm and v.day == day and v.sets:
            return v.sets[-1].bundle_version
    return "?"  # nobody visited that day


def _serve_day(arm: Arm, visits: Sequence[Visit], settings: LoopSettings, browsing: Browsing) -> list[VisitOutcome]:
    """One arm's visits of one day, then that day's events in one batch to ``/v1/events``."""
    outcomes, events = [], []
    for visit in visits:
        outcome, mine = _visit(arm, visit, settings, browsing)
        outcomes.append(outcome)
        events += mine
    if events:
        arm.api.post_events(events)
    return outcomes


def _visit(arm: Arm, visit: Visit, settings: LoopSettings, browsing: Browsing) -> tuple[VisitOutcome, list[Event]]:
    s = visit.shopper
    # common random numbers: the same draws in every arm, one row per set of the visit
    rng = np.random.default_rng([settings.seed, s.index, visit.day])
    ask_again = rng.random() < settings.second_set
    draws = rng.random((2, settings.n_images + 4))
    browsed = browsing.items(s, rng.random(settings.browse))
    session = f"{s.user_id}.d{visit.day}"
    outcome = VisitOutcome(arm.name, settings.seed, visit.day, s.index, s.new, [], 0, 0.0)
    events: list[Event] = []
    for slot in range(2 if ask_again else 1):
        ts = visit.ts + slot * SECOND_SET_DELAY_S
        body = arm.api.image_set(
            s.user_id, at=ts, n=settings.n_images, neighbours=settings.neighbours, session_id=session
        )
        images = body["images"]
        conditions = [img["condition"] for img in images]
        match = set_match(s.taste, conditions)
        outcome.sets.append(SetSeen(match, body["strategy"], body["bundle_version"]))
        mine = _respond(s, images, match, draws[slot], settings.response, ts=ts, session=session, slot=slot)
        outcome.purchases += sum(e.kind == "purchase" for e in mine)
        outcome.revenue += sum(e.revenue or 0.0 for e in mine if e.kind == "purchase")
        if slot == 0:
            at = ts + 30 + len(images)
            mine += [
                Event(
                    client_event_id=f"{session}.browse{j}",
                    kind="view",
                    ts=at + 10 * j,
                    item_id=item,
                    user_id=s.user_id,
                    session_id=session,
                )
                for j, item in enumerate(browsed)
            ]
            if ask_again and any(e.kind != "click" for e in mine):
                arm.api.session_events(session, [_session_event(e) for e in mine if e.kind != "click"])
        events += mine
    outcome.revenue = round(outcome.revenue, 2)
    outcome.events = len(events)
    return outcome, events


def _respond(
    s: LoopShopper,
    images: Sequence[Mapping[str, Any]],
    match: float,
    u: np.ndarray,  # (n_images + 4,) uniforms: one per image's view, then click, choice, cart, purchase
    response: ShopperResponse,
    *,
    ts: float,
    session: str,
    slot: int,
) -> list[Event]:
    """What the shopper does with one set: views, then maybe a click, a cart and a purchase (module docstring)."""
    tag = f"{session}.s{slot}"
    common: dict[str, Any] = {"user_id": s.user_id, "session_id": session}
    affinity = np.array([s.taste.affinity(img["condition"]) for img in images])
    top = [img["nearest_items"][0] if img["nearest_items"] else None for img in images]
    events = [
        Event(client_event_id=f"{tag}.view{i}", kind="view", ts=ts + 2 + i, item_id=item["item_id"], **common)
        for i, item in enumerate(top)
        if item is not None and u[i] < affinity[i]
    ]
    n = len(u) - 4
    if not images or u[n] >= response.click_probability(match, s.propensity):
        return events
    cumulative = np.cumsum(affinity + 1e-9)
    i = min(int(np.searchsorted(cumulative, u[n + 1] * cumulative[-1], side="right")), len(images) - 1)
    item = top[i]
    if item is None:
        return events
    when = ts + 5 + len(images)
    events.append(
        Event(
            client_event_id=f"{tag}.click",
            kind="click",
            ts=when,
            item_id=item["item_id"],
            image_id=images[i]["image_id"],
            **common,
        )
    )
    if u[n + 2] < response.cart_given_click:
        events.append(
            Event(client_event_id=f"{tag}.cart", kind="add_to_cart", ts=when + 30, item_id=item["item_id"], **common)
        )
        if u[n + 3] < response.purchase_given_cart:
            price = item.get("price")
            revenue = round(float(price), 2) if price is not None else response.revenue_median
            events.append(
                Event(
                    client_event_id=f"{tag}.buy",
                    kind="purchase",
                    ts=when + 90,
                    item_id=item["item_id"],
                    revenue=revenue,
                    **common,
                )
            )
    return events


def _session_event(e: Event) -> dict[str, Any]:
    return {"item_id": e.item_id, "event_type": e.kind, "timestamp": iso_utc(e.ts)}


def loop_start(store_end: datetime) -> datetime:
    """The loop starts on the first midnight (UTC) at or after the end of the store's logs, so that its events
    follow the logs a retrain reads with them."""
    midnight = store_end.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight if midnight == store_end else midnight + timedelta(days=1)
