"""In-process calibration of the experiment statistics with simulated shoppers (:mod:`engine.experiments.shoppers`).

:func:`simulate_aa` and :func:`simulate_ab` run hundreds of experiments, each through the real assignment,
exposure recording, event store (in-memory SQLite) and report code, to check that the statistics are
calibrated: A/A experiments for false positives under one look and under daily peeking, A/B experiments of
personalised against popular sets for power and for how often the intervals cover the true lift. Shown sets
come from :func:`~engine.experiments.shoppers.oracle_show`. The same experiments over the HTTP API are
:mod:`engine.experiments.http_simulation`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from engine.experiments import stats
from engine.experiments.assignment import record_exposures
from engine.experiments.definition import Experiment, Variant
from engine.experiments.eventstore import EventStore, ExposureIn
from engine.experiments.manager import ExperimentRegistry
from engine.experiments.report import experiment_report
from engine.experiments.shoppers import (
    SIM_START,
    RunOutcome,
    ShopperResponse,
    ShowFn,
    Shown,
    SimShopper,
    VisitFn,
    make_shoppers,
    oracle_show,
    run_shoppers,
)
from engine.world.tastes import Taste, draw_tastes

logger = logging.getLogger(__name__)


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


class SimulationSummary:
    """What a simulation found: ``figures`` (name → value) and ``checks`` ((what, passed) pairs), rendered as
    text under a :meth:`headline`. The in-process calibration and the HTTP simulation share it."""

    figures: dict[str, Any]
    checks: list[tuple[str, bool]]

    @property
    def passed(self) -> bool:
        return all(ok for _, ok in self.checks)

    def headline(self) -> str:
        raise NotImplementedError

    def notes(self) -> list[str]:
        """Lines after the checks, before the verdict."""
        return []

    def render(self) -> str:
        """The headline, one line per figure and per check (PASS or FAIL), the notes and the overall verdict."""
        lines = [self.headline()]
        lines += [f"  {k}: {v}" for k, v in self.figures.items()]
        lines += [f"  check {'PASS' if ok else 'FAIL'}: {what}" for what, ok in self.checks]
        lines += self.notes()
        lines.append(f"overall: {'PASS' if self.passed else 'FAIL'}")
        return "\n".join(lines)


@dataclass
class CalibrationSummary(SimulationSummary):
    """Rates over the simulated experiments and the checks they pass or fail (see :func:`simulate_aa`)."""

    kind: str
    settings: SimulationSettings
    figures: dict[str, Any]
    checks: list[tuple[str, bool]]
    first_report: dict[str, Any] | None = None

    def headline(self) -> str:
        s = self.settings
        return (
            f"{self.kind} simulation: {s.runs} experiments × {s.shoppers} shoppers over {s.days} days, "
            f"{s.n_images} images per set, α = {s.alpha}, seed {s.seed}"
        )


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
