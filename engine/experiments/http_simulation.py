"""The world simulator through the real HTTP API: shoppers with hidden tastes visit the storefront.

:func:`simulate_http` is what ``vitrine experiments simulate http`` runs. Every step goes through the API
that production traffic uses, on a server started for the purpose (a uvicorn subprocess on a temporary
event store) or one given by URL:

1. the experiment is created with ``POST /v1/admin/experiments``;
2. each simulated shopper (a demo-store user, so the serving model knows them, with that user's hidden
   taste) calls ``GET /v1/users/{id}/image-set?at=<arrival>`` once, which assigns the variant, builds the set
   (popular catalogue photos or the personalised generated set) and records the exposure; the shopper sees
   the conditions (class, colour, pattern) of the images returned and clicks, adds to cart and buys with
   probabilities that rise with how well they match their taste (:class:`~engine.experiments.shoppers.
   ShopperResponse`); those events go to ``POST /v1/events``, one batch per simulated day;
3. the report is read from ``GET /v1/experiments/{name}/report``.

The true lift is each shopper's conversion probability under both arms, averaged over the shoppers: the
popular set is the same for everyone, and a control shopper's personalised set is what the endpoint serves
that shopper outside the experiment (a request timed before its start records nothing).

The A/A calibration over 200 experiments runs in process (:func:`~engine.experiments.simulation.simulate_aa`:
the same assignment, event store and report code, without HTTP), because 200 × thousands of HTTP visits do
not fit a 2-core machine's minutes; ``aa_http_runs`` A/A experiments also run over HTTP, as a check that the
HTTP path loses nothing and shows no sample-ratio mismatch.

The server's clock comes from the request (``at``), so the server must run with ``VITRINE_CLIENT_CLOCK=1``.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from engine.experiments.http_api import ApiClient, iso_utc, local_api, remote_api
from engine.experiments.shoppers import (
    SIM_START,
    RunOutcome,
    ShopperResponse,
    Shown,
    SimShopper,
    make_shoppers,
    run_shoppers,
    set_match,
)
from engine.experiments.simulation import SimulationSettings, SimulationSummary, simulate_aa
from engine.world.tastes import Taste

logger = logging.getLogger(__name__)

#: Days between the starts of successive runs: more than an experiment plus the 28-day CUPED pre-period.
RUN_SPACING_DAYS = 400


@dataclass(frozen=True, kw_only=True)
class HttpSimulationSettings:
    """``shoppers`` (None: every user of the store) visit once over ``days``; ``aa_runs`` in-process A/A
    experiments calibrate the tests; ``aa_http_runs`` A/A and one A/B experiment run over HTTP."""

    shoppers: int | None = None
    days: int = 14
    n_images: int = 8
    neighbours: int = 4
    alpha: float = 0.05
    seed: int = 0
    aa_runs: int = 200
    aa_shoppers: int = 2000
    aa_http_runs: int = 1
    conversion: str = "purchase"
    response: ShopperResponse = field(default_factory=ShopperResponse)

    def __post_init__(self) -> None:
        if self.shoppers is not None and self.shoppers < 10:
            raise ValueError(f"shoppers must be at least 10 (or None for every user); got {self.shoppers}")
        if self.days < 1 or self.n_images < 1 or self.neighbours < 1 or self.aa_http_runs < 0 or self.aa_runs < 0:
            raise ValueError("days, n_images and neighbours must be ≥ 1, aa_runs and aa_http_runs ≥ 0")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1); got {self.alpha}")


@dataclass
class HttpRun:
    """One experiment run over HTTP: its report (from the API), what the shoppers did, and the timing."""

    name: str
    report: dict[str, Any]
    outcome: RunOutcome
    requests: int
    seconds: float


@dataclass
class HttpSimulationSummary(SimulationSummary):
    """Figures and PASS/FAIL checks of :func:`simulate_http`; ``ab_report`` is the A/B report from the API."""

    settings: HttpSimulationSettings
    figures: dict[str, Any]
    checks: list[tuple[str, bool]]
    ab_report: dict[str, Any] | None = None
    seconds: float | None = None

    def headline(self) -> str:
        s = self.settings
        return (
            f"world simulation through the HTTP API: {s.days} days, {s.n_images} images per set, α = {s.alpha}, "
            f"seed {s.seed}, conversion = {s.conversion}"
        )

    def notes(self) -> list[str]:
        return [f"  total time: {self.seconds:.0f} s"] if self.seconds is not None else []


def _shown(body: Mapping[str, Any]) -> Shown:
    images = body["images"]
    return Shown(
        variant=body["variant"],
        conditions=[img["condition"] for img in images],
        image_ids=[img["image_id"] for img in images],
        item_ids=[
            img.get("item_id") or (img["nearest_items"][0]["item_id"] if img["nearest_items"] else None)
            for img in images
        ],
    )


def run_http_experiment(
    api: ApiClient,
    shoppers: Sequence[SimShopper],
    strategies: Mapping[str, str],
    *,
    name: str,
    settings: HttpSimulationSettings,
    truth: bool,
    slot: int = 0,
    show_progress: bool = False,
) -> HttpRun:
    """Create experiment ``name`` with ``strategies`` (variant → strategy, equal weights), run the shoppers
    through the API, and read its report as of the stop. With ``truth``, also fetch each shopper's set of
    the arm they did not see, for the true conversion rates (:attr:`RunOutcome.true_rates`).

    The shoppers are real store users, so runs sharing an event store must not overlap in time (a purchase
    is attributed to every experiment its user is exposed in): run ``slot`` runs from ``RUN_SPACING_DAYS ×
    slot`` days after the simulator's start, and its shoppers must arrive then (``make_shoppers(start=...)``)."""
    start = _slot_start(slot)
    stop = start + timedelta(days=settings.days)
    config = {
        "name": name,
        "salt": f"{name}-{settings.seed}",
        "start": iso_utc(start.timestamp()),
        "stop": iso_utc(stop.timestamp()),
        "conversion": settings.conversion,
        "variants": [{"name": v, "strategy": s} for v, s in strategies.items()],
    }
    t0 = time.perf_counter()
    before = api.requests
    api.create_experiment(config)
    seen: dict[str, Shown] = {}

    def visit(batch: Sequence[SimShopper]) -> list[Shown]:
        out = []
        for s in batch:
            body = api.image_set(
                s.unit_id,
                at=s.arrival_ts,
                n=settings.n_images,
                neighbours=settings.neighbours,
                experiment=name,
                exposure_id=f"{name}.{s.unit_id}",
            )
            shown = _shown(body)
            seen[s.unit_id] = shown
            out.append(shown)
        return out

    outcome = run_shoppers(
        shoppers,
        visit=visit,
        sink=api.post_events,
        response=settings.response,
        seed=settings.seed,
        start=start,
        tag=name,
        show_progress=show_progress,
    )
    if truth:
        outcome.true_rates = _true_rates(
            api, shoppers, strategies, seen, settings, before_start=start.timestamp() - 86_400
        )
    report = api.report(name, stop)
    return HttpRun(name, report, outcome, api.requests - before, time.perf_counter() - t0)


def _true_rates(
    api: ApiClient,
    shoppers: Sequence[SimShopper],
    strategies: Mapping[str, str],
    seen: Mapping[str, Shown],
    settings: HttpSimulationSettings,
    *,
    before_start: float,
) -> dict[str, float]:
    """Mean conversion probability of every shopper under each arm. The popular set is one for everyone (taken
    from a shopper who saw it); a shopper's personalised set, if they saw the other arm, is fetched from the
    endpoint at a time before the experiment (no exposure is recorded then)."""
    popular = [sh.conditions for sh in seen.values() if sh.variant and strategies[sh.variant] == "popular"]
    if popular and any(p != popular[0] for p in popular):
        raise RuntimeError("the popular arm showed different sets to different shoppers")

    def conditions(s: SimShopper, strategy: str) -> Sequence[Mapping[str, str]]:
        mine = seen.get(s.unit_id)
        if mine is not None and mine.variant and strategies[mine.variant] == strategy:
            return mine.conditions
        if strategy == "popular":
            return popular[0]
        body = api.image_set(s.unit_id, at=before_start, n=settings.n_images, neighbours=settings.neighbours)
        if body["experiment"] is not None:
            raise RuntimeError(f"a request before the experiment's start was served by {body['experiment']}")
        return [img["condition"] for img in body["images"]]

    rates = {}
    for variant, strategy in strategies.items():
        p = [
            settings.response.conversion_probability(set_match(s.taste, conditions(s, strategy)), s.propensity)
            for s in shoppers
        ]
        rates[variant] = float(np.mean(p))
    return rates


def consistency_checks(run: HttpRun) -> list[tuple[str, bool]]:
    """The report (read back through the API) counts every exposure and conversion the shoppers made, once."""
    by_name = {v["name"]: v for v in run.report["variants"]}
    checks = []
    for variant, exposed in sorted(run.outcome.exposed.items()):
        got = by_name.get(variant, {})
        conv = run.outcome.converted.get(variant, 0)
        checks.append(
            (
                f"{run.name}/{variant}: report counts {got.get('exposures')} exposed and {got.get('conversions')} "
                f"converted, the shoppers did {exposed} and {conv}",
                got.get("exposures") == exposed and got.get("conversions") == conv,
            )
        )
    return checks


AA_STRATEGIES = {"a": "popular", "b": "popular"}
AB_STRATEGIES = {"control": "popular", "treatment": "personalised"}


def simulate_http(
    api: ApiClient,
    tastes: Mapping[str, Taste],
    settings: HttpSimulationSettings | None = None,
    *,
    show_progress: bool = True,
) -> HttpSimulationSummary:
    """The full check (module docstring): in-process A/A calibration, A/A over HTTP, one A/B of personalised
    against popular over HTTP. Returns the figures and the checks (PASS/FAIL each)."""
    settings = settings or HttpSimulationSettings()
    figures: dict[str, Any] = {}
    checks: list[tuple[str, bool]] = []
    if settings.aa_runs:
        more_figures, more_checks = _calibrate_in_process(tastes, settings, show_progress=show_progress)
        figures.update(more_figures)
        checks += more_checks

    ids = sorted(tastes)
    rng = np.random.default_rng([settings.seed, 0x477])
    if settings.shoppers is not None and settings.shoppers < len(ids):
        ids = sorted(rng.choice(ids, size=settings.shoppers, replace=False).tolist())
    population = {u: tastes[u] for u in ids}

    for k in range(settings.aa_http_runs):
        name = f"sim-http-aa-{settings.seed}-{k}-{secrets.token_hex(3)}"
        seed = settings.seed * 1000 + 500 + k
        run = _run_in_slot(
            api,
            population,
            AA_STRATEGIES,
            settings,
            name=name,
            slot=k + 1,
            seed=seed,
            truth=False,
            show_progress=show_progress,
        )
        comp = run.report["comparisons"][0]
        figures[f"A/A over HTTP #{k + 1}"] = (
            f"{len(population)} shoppers, {run.requests} requests in {run.seconds:.0f} s "
            f"({1000 * run.seconds / run.requests:.1f} ms per request); p = {_g(comp['p_value'])}, always-valid p = "
            f"{_g(comp['sequential']['always_valid_p_value'])}, SRM p = {_g(run.report['srm']['p_value'])}"
        )
        checks += consistency_checks(run)
        checks.append((f"{run.name}: no sample-ratio mismatch alarm (SRM p ≥ 0.001)", not run.report["srm"]["alarm"]))

    name = f"sim-http-ab-{settings.seed}-{secrets.token_hex(3)}"
    seed = settings.seed * 1000 + 1
    run = _run_in_slot(
        api, population, AB_STRATEGIES, settings, name=name, slot=0, seed=seed, truth=True, show_progress=show_progress
    )
    more_figures, more_checks = _ab_figures(run, settings, shoppers=len(population))
    figures.update(more_figures)
    checks += more_checks
    return HttpSimulationSummary(settings=settings, figures=figures, checks=checks, ab_report=run.report)


def _calibrate_in_process(
    tastes: Mapping[str, Taste], settings: HttpSimulationSettings, *, show_progress: bool
) -> tuple[dict[str, Any], list[tuple[str, bool]]]:
    """The A/A calibration in process (``settings.aa_runs`` experiments on the store's tastes, no HTTP)."""
    t0 = time.perf_counter()
    aa = simulate_aa(
        SimulationSettings(
            runs=settings.aa_runs,
            shoppers=min(settings.aa_shoppers, len(tastes)),
            days=settings.days,
            n_images=settings.n_images,
            alpha=settings.alpha,
            seed=settings.seed,
            response=settings.response,
        ),
        tastes=list(tastes.values()),
        show_progress=show_progress,
    )
    figures = {
        f"A/A calibration, in process ({settings.aa_runs} experiments × {aa.settings.shoppers} shoppers, no HTTP)": (
            f"{time.perf_counter() - t0:.0f} s"
        )
    }
    figures.update({f"  A/A {k}": v for k, v in aa.figures.items()})
    return figures, [(f"A/A (in process): {what}", ok) for what, ok in aa.checks]


def _run_in_slot(
    api: ApiClient,
    population: Mapping[str, Taste],
    strategies: Mapping[str, str],
    settings: HttpSimulationSettings,
    *,
    name: str,
    slot: int,
    seed: int,
    truth: bool,
    show_progress: bool,
) -> HttpRun:
    """One shopper per taste of ``population``, arriving over run ``slot``'s days (seeded by ``seed``), through
    experiment ``name`` over HTTP (:func:`run_http_experiment`)."""
    shoppers = make_shoppers(
        population, start=_slot_start(slot), days=settings.days, seed=seed, response=settings.response
    )
    return run_http_experiment(
        api, shoppers, strategies, name=name, settings=settings, truth=truth, slot=slot, show_progress=show_progress
    )


def _ab_figures(
    run: HttpRun, settings: HttpSimulationSettings, *, shoppers: int
) -> tuple[dict[str, Any], list[tuple[str, bool]]]:
    """The A/B run's figures (counts, true and reported lift, always-valid test, SRM, CUPED) and checks."""
    figures: dict[str, Any] = {}
    checks: list[tuple[str, bool]] = []
    comp = run.report["comparisons"][0]
    rates = run.outcome.true_rates or {}
    true_abs, true_rel = run.outcome.true_lift("treatment", "control") or (float("nan"), float("nan"))
    ci, rci = comp["absolute_lift_ci"], comp["relative_lift_ci"]
    detected = comp["p_value"] is not None and comp["p_value"] < settings.alpha
    covered = ci is not None and ci[0] <= true_abs <= ci[1]
    by_name = {v["name"]: v for v in run.report["variants"]}
    figures["A/B over HTTP, personalised vs popular"] = (
        f"{shoppers} shoppers, conversion = {settings.conversion}, {run.requests} requests in {run.seconds:.0f} s "
        f"({1000 * run.seconds / run.requests:.1f} ms per request)"
    )
    figures["  exposed / converted"] = ", ".join(
        f"{v}: {by_name[v]['exposures']} / {by_name[v]['conversions']} ({_pct(by_name[v]['conversion_rate'])})"
        for v in ("control", "treatment")
    )
    figures["  true conversion rates (from hidden tastes)"] = (
        f"control {_pct(rates.get('control'))}, treatment {_pct(rates.get('treatment'))}: true lift "
        f"{100 * true_abs:+.2f} pp ({true_rel:+.1%})"
    )
    figures["  reported lift"] = (
        f"{100 * comp['absolute_lift']:+.2f} pp, 95% CI [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}] pp; relative "
        f"{comp['relative_lift']:+.1%} [{rci[0]:+.1%}, {rci[1]:+.1%}]; p = {_g(comp['p_value'])}"
        if ci and rci
        else "n/a"
    )
    seq = comp["sequential"]
    figures["  always-valid (mSPRT, daily looks)"] = (
        f"p = {_g(seq['always_valid_p_value'])}, confidence sequence {_pair_pp(seq['confidence_sequence'])}, "
        f"{'significant' if seq['significant'] else 'not significant'}"
    )
    figures["  SRM"] = f"p = {_g(run.report['srm']['p_value'])}{' ALARM' if run.report['srm']['alarm'] else ''}"
    if comp.get("cuped"):
        cup = comp["cuped"]
        figures["  CUPED"] = (
            f"lift {100 * cup['absolute_lift']:+.2f} pp {_pair_pp(cup['absolute_lift_ci'])}, variance reduction "
            f"{cup['variance_reduction']:.1%}"
        )
    checks += consistency_checks(run)
    checks.append((f"{run.name}: the lift is detected (p = {_g(comp['p_value'])} < α = {settings.alpha})", detected))
    checks.append(
        (f"{run.name}: the reported 95% CI covers the simulator's true lift {100 * true_abs:+.2f} pp", covered)
    )
    checks.append((f"{run.name}: no sample-ratio mismatch alarm", not run.report["srm"]["alarm"]))
    return figures, checks


def _slot_start(slot: int) -> datetime:
    return SIM_START + timedelta(days=RUN_SPACING_DAYS * slot)


def _g(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2%}"


def _pair_pp(pair: Sequence[float] | None) -> str:
    return "n/a" if not pair else f"[{100 * pair[0]:+.2f}, {100 * pair[1]:+.2f}] pp"


def run_simulation(
    store: Path,
    settings: HttpSimulationSettings,
    *,
    artifacts: Path | None = None,
    url: str | None = None,
    admin_token: str | None = None,
    database_url: str | None = None,
    show_progress: bool = True,
) -> HttpSimulationSummary:
    """``vitrine experiments simulate http``: tastes from the demo store ``store``, against the API at ``url``
    or a local one started on ``artifacts`` (the bundle trained on that store)."""
    from engine.world import load_tastes

    tastes = load_tastes(store)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request would drown the output
    t0 = time.perf_counter()
    if url:
        api_context = remote_api(url, admin_token)
    elif artifacts is not None:
        api_context = local_api(artifacts, database_url=database_url)
    else:
        raise ValueError("give the API's --url or the --artifacts to serve")
    with api_context as api:
        summary = simulate_http(api, tastes, settings, show_progress=show_progress)
    summary.seconds = time.perf_counter() - t0
    return summary
