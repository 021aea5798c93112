"""A world simulator for experiments: shoppers with hidden tastes see their variant's images and respond.

Each simulated shopper (a :class:`SimShopper`: a unit id, a :class:`~engine.world.Taste`, a propensity and an
arrival time) visits once. The visit shows a set of images, each with its condition (class, colour, pattern).
The set's match is the mean :meth:`Taste.affinity` of its conditions, m ∈ [0, 1], and (see
:class:`ShopperResponse`)::

    P(click)     = min(1, propensity × (click_base + click_slope × m))
    P(purchase)  = P(click) × cart_given_click × purchase_given_cart

so conversion rises with how well the images shown suit the shopper. Purchases before the experiment (the
pre-period, a Poisson number with mean ``propensity × pre_period_rate``) give CUPED its covariate.

Two ways to run it:

- In process (:func:`simulate_aa`, :func:`simulate_ab`): hundreds of experiments, each through the real
  assignment, exposure recording, event store (in-memory SQLite) and report code, to check that the
  statistics are calibrated. Shown sets come from :func:`oracle_show`.
- Through HTTP (the lead's integration): :func:`run_shoppers` with a ``visit`` that calls the image-set
  endpoint (which assigns and records the exposure) and a ``sink`` that posts to ``/v1/events``; pass a
  ``show(unit_id, variant)`` able to fetch either variant's set to know the true lift.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from engine.experiments import stats
from engine.experiments.assignment import record_exposures
from engine.experiments.definition import Experiment, Variant
from engine.experiments.eventstore import Event, EventStore, ExposureIn
from engine.experiments.manager import ExperimentRegistry
from engine.experiments.report import DAY_S, experiment_report
from engine.world.tastes import ATTRIBUTES, VOCABULARIES, Taste, draw_tastes

logger = logging.getLogger(__name__)

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


def in_process_visit(store: EventStore, experiment: Experiment, show: ShowFn) -> VisitFn:
    """A ``visit`` that records the exposures through :func:`record_exposures` (as the image-set endpoint
    would) and shows each exposed unit its variant's set via ``show``. Units outside the experiment see
    nothing and are not analysed."""

    def visit(batch: Sequence[SimShopper]) -> list[Shown]:
        exposures = [
            ExposureIn(
                unit_id=s.unit_id,
                ts=s.arrival_ts,
                user_id=s.unit_id,
                session_id=f"{s.unit_id}.s1",
                bundle_version="simulator",
                exposure_id=f"exp.{experiment.name}.{s.unit_id}",
            )
            for s in batch
        ]
        variants = record_exposures(store, experiment, exposures)
        return [
            Shown(variant=v, conditions=show(s.unit_id, v) if v else ()) for s, v in zip(batch, variants, strict=True)
        ]

    return visit


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


# ------------------------------------------------------------------------------------------ calibration runs


@dataclass(frozen=True, kw_only=True)
class SimulationSettings:
    """One simulated experiment: ``shoppers`` arrive over ``days``; ``n_images`` per set; level ``alpha``."""

    runs: int = 200
    shoppers: int = 2000
    days: int = 14
    n_images: int = 8
    alpha: float = 0.05
    seed: int = 0
    response: ShopperResponse = field(default_factory=ShopperResponse)

    def __post_init__(self) -> None:
        if self.runs < 1 or self.shoppers < 10 or self.days < 1 or self.n_images < 1:
            raise ValueError("need runs ≥ 1, shoppers ≥ 10, days ≥ 1 and n_images ≥ 1")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1); got {self.alpha}")


def simulate_experiment(
    settings: SimulationSettings,
    run: int,
    strategies: Mapping[str, str],
    *,
    tastes: Sequence[Taste] | None = None,
    truth: bool = False,
) -> tuple[dict[str, Any], RunOutcome]:
    """One experiment end to end in an in-memory event store: register it, run the shoppers through
    assignment, exposure recording and event storage, and build its report. Returns (report, outcome)."""
    seed = settings.seed * 100_003 + run
    rng = np.random.default_rng([seed, 0x7A5])
    if tastes is None:
        population = draw_tastes(settings.shoppers, rng)
    else:
        pick = rng.choice(len(tastes), size=min(settings.shoppers, len(tastes)), replace=False)
        population = [tastes[i] for i in pick]
    shoppers = make_shoppers(population, start=SIM_START, days=settings.days, seed=seed, response=settings.response)
    name = f"sim-{run}"
    experiment = Experiment(
        name=name,
        salt=f"sim-{settings.seed}-{run}",
        start=SIM_START,
        stop=SIM_START + timedelta(days=settings.days),
        variants=tuple(Variant(name=v, strategy=s) for v, s in strategies.items()),
    )
    with EventStore("sqlite://") as store:
        ExperimentRegistry(store).create(experiment)
        show = oracle_show(shoppers, strategies, n_images=settings.n_images, seed=seed)
        outcome = run_shoppers(
            shoppers,
            visit=in_process_visit(store, experiment, show),
            sink=store.add_events,
            response=settings.response,
            seed=seed,
            show=show if truth else None,
            variants=tuple(strategies) if truth else (),
            start=SIM_START,
            tag=name,
        )
        report = experiment_report(store, name, as_of=experiment.stop, alpha=settings.alpha)
    return report, outcome


@dataclass
class CalibrationSummary:
    """Rates over the simulated experiments and the checks they pass or fail (see :func:`simulate_aa`)."""

    kind: str
    settings: SimulationSettings
    figures: dict[str, Any]
    checks: list[tuple[str, bool]]
    first_report: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return all(ok for _, ok in self.checks)

    def render(self) -> str:
        s = self.settings
        lines = [
            f"{self.kind} simulation: {s.runs} experiments × {s.shoppers} shoppers over {s.days} days, "
            f"{s.n_images} images per set, α = {s.alpha}, seed {s.seed}"
        ]
        lines += [f"  {k}: {v}" for k, v in self.figures.items()]
        lines += [f"  check {'PASS' if ok else 'FAIL'}: {what}" for what, ok in self.checks]
        lines.append(f"overall: {'PASS' if self.passed else 'FAIL'}")
        return "\n".join(lines)


def _rate(k: int, n: int) -> str:
    low, high = stats.wilson_interval(k, n)
    return f"{k / n:.1%} ({k}/{n}; 95% CI {low:.1%}-{high:.1%})"


def simulate_aa(
    settings: SimulationSettings | None = None,
    *,
    tastes: Sequence[Taste] | None = None,
    show_progress: bool = True,
) -> CalibrationSummary:
    """Many A/A experiments (both arms show popular images): the share of false positives of the fixed-horizon
    test at the end (should lie in [2%, 8%] at α = 5% over 200 runs), of the always-valid test under daily
    peeking (should be ≤ 5%), and — what not to do — of the fixed-horizon test under daily peeking."""
    settings = settings or SimulationSettings()
    fixed = sequential = naive = srm = covered = 0
    reductions = []
    first = None
    for run in tqdm(range(settings.runs), desc="A/A experiments", disable=not show_progress):
        report, _ = simulate_experiment(settings, run, {"a": "popular", "b": "popular"}, tastes=tastes)
        first = first or report
        comp = report["comparisons"][0]
        fixed += comp["p_value"] is not None and comp["p_value"] < settings.alpha
        sequential += comp["sequential"]["significant"]
        naive += bool((_daily_p_values(report) < settings.alpha).any())
        srm += report["srm"]["alarm"]
        ci = comp["absolute_lift_ci"]
        covered += ci is not None and ci[0] <= 0 <= ci[1]
        if comp["cuped"]:
            reductions.append(comp["cuped"]["variance_reduction"])
    n = settings.runs
    figures = {
        "fixed-horizon two-proportion test, one look at the end: false-positive rate": _rate(fixed, n),
        "always-valid mSPRT under daily peeking: false-positive rate": _rate(sequential, n),
        "fixed-horizon test under daily peeking (what not to do): false-positive rate": _rate(naive, n),
        "SRM alarms (p < 0.001)": f"{srm}/{n}",
        "Newcombe 95% CI covers the true lift (0)": _rate(covered, n),
        "CUPED variance reduction (median)": f"{np.median(reductions):.1%}" if reductions else "n/a",
    }
    checks = [
        (f"fixed-horizon false-positive rate {fixed / n:.1%} in [2%, 8%]", 0.02 <= fixed / n <= 0.08),
        (f"always-valid false-positive rate under daily peeking {sequential / n:.1%} ≤ 5%", sequential / n <= 0.05),
    ]
    return CalibrationSummary("A/A", settings, figures, checks, first)


def simulate_ab(
    settings: SimulationSettings | None = None,
    *,
    tastes: Sequence[Taste] | None = None,
    show_progress: bool = True,
) -> CalibrationSummary:
    """A/B experiments of personalised (treatment) against popular (control) images. Reports the true lift
    (from each shopper's conversion probability under both arms), the estimated lift of the first run with
    its interval, and over all runs how often the lift is detected and how often the intervals cover the
    truth. Checks: the first run detects the lift and its interval covers the true lift, and over all runs the
    absolute-lift interval's coverage is not below what 95% allows (binomial 99% lower bound)."""
    settings = settings or SimulationSettings(runs=40)
    detected = seq_detected = covered_abs = covered_rel = 0
    first_line: list[str] = []
    first_ok = False
    true_abs, true_rel = [], []
    first = None
    for run in tqdm(range(settings.runs), desc="A/B experiments", disable=not show_progress):
        report, outcome = simulate_experiment(
            settings, run, {"control": "popular", "treatment": "personalised"}, tastes=tastes, truth=True
        )
        comp = report["comparisons"][0]
        lift = outcome.true_lift("treatment", "control")
        assert lift is not None
        t_abs, t_rel = lift
        true_abs.append(t_abs)
        true_rel.append(t_rel)
        hit = comp["p_value"] is not None and comp["p_value"] < settings.alpha
        ci, rci = comp["absolute_lift_ci"], comp["relative_lift_ci"]
        cov = ci is not None and ci[0] <= t_abs <= ci[1]
        detected += hit
        seq_detected += comp["sequential"]["significant"]
        covered_abs += cov
        covered_rel += rci is not None and rci[0] <= t_rel <= rci[1]
        if first is None:
            first = report
            first_ok = hit and cov
            rates = outcome.true_rates or {}
            first_line = [
                f"true conversion rates control {rates['control']:.2%}, treatment {rates['treatment']:.2%}: "
                f"true lift {100 * t_abs:+.2f} pp ({t_rel:+.1%})",
                f"estimated lift {100 * comp['absolute_lift']:+.2f} pp, 95% CI [{100 * ci[0]:+.2f}, "
                f"{100 * ci[1]:+.2f}] pp ({'covers' if cov else 'MISSES'} the truth); relative "
                f"{comp['relative_lift']:+.1%} [{rci[0]:+.1%}, {rci[1]:+.1%}]; p = {comp['p_value']:.2g}; "
                f"always-valid p = {comp['sequential']['always_valid_p_value']:.2g}",
            ]
    n = settings.runs
    # the lowest coverage count that a true 95% coverage reaches with probability ≥ 99% (binomial quantile)
    from scipy.stats import binom

    floor = int(binom.ppf(0.01, n, 0.95))
    figures = {
        "run 1": first_line[0],
        "run 1 estimate": first_line[1],
        "true absolute lift over runs (mean)": f"{100 * np.mean(true_abs):+.2f} pp (relative {np.mean(true_rel):+.1%})",
        "detected by the fixed-horizon test (power)": _rate(detected, n),
        "detected by the always-valid test under daily peeking": _rate(seq_detected, n),
        "Newcombe 95% CI covers the true absolute lift": _rate(covered_abs, n),
        "delta-method 95% CI covers the true relative lift": _rate(covered_rel, n),
    }
    checks = [
        ("run 1 detects the lift (p < α) and its 95% CI covers the true lift", first_ok),
        (f"absolute-lift CI coverage {covered_abs}/{n} ≥ {floor}/{n} (consistent with 95%)", covered_abs >= floor),
    ]
    return CalibrationSummary("A/B (personalised vs popular)", settings, figures, checks, first)


def _daily_p_values(report: dict[str, Any]) -> np.ndarray:
    """The fixed-horizon test's p-value at each daily look (the naive peeker's view)."""
    t, c = report["comparisons"][0]["variant"], report["control"]
    out = [
        stats.two_proportion_ztest(d[t]["conversions"], d[t]["exposures"], d[c]["conversions"], d[c]["exposures"])[1]
        for d in report["daily"]
    ]
    return np.nan_to_num(np.array(out, dtype=np.float64), nan=1.0)


def _condition(index: tuple[Any, ...]) -> dict[str, str]:
    return {a: VOCABULARIES[a][int(i)] for a, i in zip(ATTRIBUTES, index, strict=True)}


def _stable_seed(seed: int, unit_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}.{unit_id}".encode()).digest()[:8], "little")
