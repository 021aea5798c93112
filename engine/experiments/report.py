"""Experiment reports: per-variant figures, lifts with intervals, SRM, always-valid inference, CUPED, a chart.

The unit of analysis is the experiment's unit (user or session). A unit is *exposed* from its first recorded
exposure; it *converts* if an event of the experiment's ``conversion`` kind is attributed to it (through its
user or session id) at or after that first exposure and by ``as_of``. Revenue is the sum of its purchases in
the same window, so revenue per exposure = revenue / exposed units (a unit with no purchase counts as 0).
"""

from __future__ import annotations

import io
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from engine.experiments import stats
from engine.experiments.definition import Experiment
from engine.experiments.eventstore import EventStore, to_epoch
from engine.experiments.manager import ExperimentRegistry

DAY_S = 86_400.0
SRM_THRESHOLD = 1e-3
PRE_PERIOD_DAYS = 28


def experiment_report(
    store: EventStore,
    name: str,
    *,
    as_of: datetime | float | None = None,
    alpha: float = 0.05,
    pre_period_days: float = PRE_PERIOD_DAYS,
) -> dict[str, Any]:
    """The report of experiment ``name`` as of ``as_of`` (default: now, or the stop time if earlier).

    Returns a JSON-ready dict: ``experiment`` (its config), ``as_of``, ``variants`` (per variant: exposed
    units, exposure records, conversions, conversion rate with its Wilson interval, clicks, revenue, revenue
    per exposure with its interval), ``comparisons`` (each variant against the control: absolute lift with the
    Newcombe and Wald intervals, relative lift with the delta-method interval, the two-proportion test's
    p-value, the revenue difference, the always-valid mSPRT p-value and confidence sequence over daily looks,
    and CUPED when pre-period data exist), ``srm`` and ``daily`` (cumulative exposures and conversions per
    variant at each daily look: the chart's data), and ``warnings``.
    """
    experiment = ExperimentRegistry(store).get(name)
    stop_s = experiment.stop.timestamp()
    as_of_s = min(to_epoch(as_of), stop_s) if as_of is not None else min(to_epoch(None), stop_s)
    rows = store.unit_outcomes(
        experiment.name,
        unit=experiment.unit,
        conversion=experiment.conversion,
        as_of=as_of_s,
        pre_period_s=pre_period_days * DAY_S,
        start=experiment.start.timestamp(),
    )
    return build_report(experiment, rows, as_of_s=as_of_s, alpha=alpha, pre_period_days=pre_period_days)


def build_report(
    experiment: Experiment,
    rows: list[dict[str, Any]],
    *,
    as_of_s: float,
    alpha: float = 0.05,
    pre_period_days: float = PRE_PERIOD_DAYS,
) -> dict[str, Any]:
    """The report from per-unit outcome rows (:meth:`EventStore.unit_outcomes`); see :func:`experiment_report`."""
    names = experiment.variant_names
    variant = np.array([r["variant"] for r in rows], dtype=object)
    first_ts = np.array([r["first_ts"] for r in rows], dtype=np.float64)
    conv_ts = np.array(
        [math.nan if r["first_conversion_ts"] is None else r["first_conversion_ts"] for r in rows], dtype=np.float64
    )
    revenue = np.array([r["revenue"] or 0.0 for r in rows], dtype=np.float64)
    pre = np.array([r["pre_conversions"] for r in rows], dtype=np.float64)
    warnings: list[str] = []
    with np.errstate(over="ignore", invalid="ignore"):
        revenue_overflows = not math.isfinite(float(revenue.sum()))
    if revenue_overflows:
        warnings.append(
            "the stored revenue is too large to add up in floating point (some purchase carries an absurd revenue, "
            "perhaps stored before VITRINE_MAX_REVENUE was enforced); revenue figures that overflow are null"
        )
    unknown = sorted(set(variant.tolist()) - set(names))
    if unknown:
        warnings.append(f"units recorded in variants no longer configured: {unknown} (left out)")

    per_variant: dict[str, dict[str, Any]] = {}
    masks = {v: variant == v for v in names}
    for v in names:
        m = masks[v]
        n = int(m.sum())
        x = int((~np.isnan(conv_ts[m])).sum())
        rate_low, rate_high = stats.wilson_interval(x, n, alpha)
        with np.errstate(over="ignore", invalid="ignore"):  # absurd revenue overflows to inf: reported as null
            rpe = stats.mean_estimate(revenue[m], alpha)
            revenue_total = float(revenue[m].sum())
        per_variant[v] = {
            "name": v,
            "strategy": experiment.variant(v).strategy,
            "weight": experiment.variant(v).weight,
            "exposures": n,
            "exposure_events": int(sum(r["exposures"] for r, keep in zip(rows, m, strict=True) if keep)),
            "conversions": x,
            "conversion_rate": x / n if n else None,
            "conversion_rate_ci": _pair(rate_low, rate_high),
            "clicks": int(sum(r["clicks"] for r, keep in zip(rows, m, strict=True) if keep)),
            "revenue": _num(revenue_total),
            "revenue_per_exposure": _num(rpe.value),
            "revenue_per_exposure_ci": _pair(rpe.low, rpe.high),
        }

    look_times = daily_look_times(experiment.start.timestamp(), as_of_s)
    control = experiment.control
    assert control is not None  # Experiment.__post_init__ resolves a missing control to the first variant
    comparisons = []
    for v in names:
        if v == control:
            continue
        a, c = per_variant[v], per_variant[control]
        x_t, n_t, x_c, n_c = a["conversions"], a["exposures"], c["conversions"], c["exposures"]
        z, p = stats.two_proportion_ztest(x_t, n_t, x_c, n_c)
        newcombe = stats.newcombe_diff(x_t, n_t, x_c, n_c, alpha)
        wald = stats.wald_diff(x_t, n_t, x_c, n_c, alpha)
        rel = stats.relative_lift(x_t, n_t, x_c, n_c, alpha)
        with np.errstate(over="ignore", invalid="ignore"):
            rev = stats.welch_diff(revenue[masks[v]], revenue[masks[control]], alpha)
        pair = masks[v] | masks[control]
        lk = stats.looks(first_ts[pair], conv_ts[pair], masks[v][pair], look_times)
        seq = lk.sequential(alpha=alpha, tau=experiment.msprt_tau)
        converted = (~np.isnan(conv_ts)).astype(np.float64)
        cup = stats.cuped(converted[masks[v]], pre[masks[v]], converted[masks[control]], pre[masks[control]], alpha)
        comparisons.append(
            {
                "variant": v,
                "control": control,
                "absolute_lift": _num(newcombe.value),
                "absolute_lift_ci": _pair(newcombe.low, newcombe.high),
                "absolute_lift_ci_method": "Newcombe hybrid score (1998, method 10)",
                "absolute_lift_ci_wald": _pair(wald.low, wald.high),
                "relative_lift": _num(rel.value),
                "relative_lift_ci": _pair(rel.low, rel.high),
                "relative_lift_ci_method": "delta method on log(p_t / p_c) (Katz 1978)",
                "z": _num(z),
                "p_value": _num(p),
                "significant": bool(p < alpha) if math.isfinite(p) else False,
                "revenue_per_exposure_diff": _num(rev.value),
                "revenue_per_exposure_diff_ci": _pair(rev.low, rev.high),
                "revenue_per_exposure_p_value": _num(rev.p_value),
                "sequential": {
                    "method": "mSPRT (Johari et al. 2017), normal mixture, daily looks",
                    "looks": len(look_times),
                    "tau": _num(float(seq.taus[-1])) if seq.taus.size else None,
                    "always_valid_p_value": _num(seq.p_value),
                    "confidence_sequence": _pair(float(seq.low[-1]), float(seq.high[-1])) if seq.low.size else None,
                    "significant": seq.rejected(alpha),
                },
                "cuped": None
                if cup is None
                else {
                    "covariate": f"{experiment.conversion} events in the {pre_period_days:g} days before start",
                    "theta": cup.theta,
                    "absolute_lift": _num(cup.adjusted.value),
                    "absolute_lift_ci": _pair(cup.adjusted.low, cup.adjusted.high),
                    "p_value": _num(cup.adjusted.p_value),
                    "variance_reduction": cup.variance_reduction,
                },
            }
        )
        if not n_t or not n_c:
            warnings.append(f"{v} vs {control}: an arm has no exposed units yet")

    srm = stats.sample_ratio_mismatch(
        [per_variant[v]["exposures"] for v in names], [experiment.variant(v).weight for v in names], SRM_THRESHOLD
    )
    if srm.alarm:
        warnings.append(
            f"sample ratio mismatch (p = {srm.p_value:.2g} < {SRM_THRESHOLD}): exposed units do not follow the "
            "configured weights; check assignment and exposure logging before trusting any lift"
        )
    daily = []
    for t in look_times:
        entry: dict[str, Any] = {"time": _iso(t)}
        for v in names:
            m = masks[v]
            n = int((first_ts[m] <= t).sum())
            x = int((conv_ts[m] <= t).sum())
            entry[v] = {"exposures": n, "conversions": x, "conversion_rate": x / n if n else None}
        daily.append(entry)
    return {
        "experiment": experiment.to_dict(),
        "as_of": _iso(as_of_s),
        "alpha": alpha,
        "unit": experiment.unit,
        "conversion": experiment.conversion,
        "control": control,
        "variants": [per_variant[v] for v in names],
        "comparisons": comparisons,
        "srm": {
            "observed": list(srm.observed),
            "expected": list(srm.expected),
            "chi2": srm.chi2,
            "p_value": srm.p_value,
            "threshold": SRM_THRESHOLD,
            "alarm": srm.alarm,
        },
        "daily": daily,
        "warnings": warnings,
    }


def daily_look_times(start_s: float, as_of_s: float) -> list[float]:
    """Look times: start + 1 day, start + 2 days, … up to ``as_of``, and ``as_of`` itself as the last look."""
    if as_of_s <= start_s:
        return []
    times = list(np.arange(start_s + DAY_S, as_of_s, DAY_S))
    return [*times, as_of_s]


# ---------------------------------------------------------------------------------------------- rendering


def render_report(report: dict[str, Any]) -> str:
    """A plain-text rendering of :func:`experiment_report`'s dict, for the terminal."""
    exp = report["experiment"]
    lines = [
        f"experiment {exp['name']}  ({exp['unit']} units, conversion = {exp['conversion']}, "
        f"{exp['start']} → {exp['stop']}, traffic {exp['traffic']:.0%})",
        f"as of {report['as_of']}   α = {report['alpha']}",
        "",
        f"{'variant':<16}{'exposed':>9}{'conv':>7}{'rate':>9}  {'95% CI':<19}{'rev/exp':>9}  {'95% CI':<19}",
    ]
    for v in report["variants"]:
        lines.append(
            f"{v['name']:<16}{v['exposures']:>9}{v['conversions']:>7}{_pct(v['conversion_rate']):>9}  "
            f"{_ci(v['conversion_rate_ci'], _pct):<19}{_money(v['revenue_per_exposure']):>9}  "
            f"{_ci(v['revenue_per_exposure_ci'], _money):<19}"
        )
    for c in report["comparisons"]:
        seq = c["sequential"]
        lines += [
            "",
            f"{c['variant']} vs {c['control']}:",
            f"  absolute lift   {_pp(c['absolute_lift'])}  95% CI {_ci(c['absolute_lift_ci'], _pp)}  (Newcombe)",
            f"  relative lift   {_pct(c['relative_lift'], signed=True)}  95% CI "
            f"{_ci(c['relative_lift_ci'], lambda x: _pct(x, signed=True))}",
            f"  two-proportion z test: z = {_f(c['z'])}, p = {_p(c['p_value'])}"
            + ("  (significant)" if c["significant"] else ""),
            f"  revenue / exposure diff {_money(c['revenue_per_exposure_diff'])}  95% CI "
            f"{_ci(c['revenue_per_exposure_diff_ci'], _money)}, p = {_p(c['revenue_per_exposure_p_value'])}",
            f"  always-valid (mSPRT, {seq['looks']} daily looks): p = {_p(seq['always_valid_p_value'])}, "
            f"confidence sequence {_ci(seq['confidence_sequence'], _pp)}"
            + ("  (significant)" if seq["significant"] else ""),
        ]
        cup = c["cuped"]
        lines.append(
            "  CUPED: no pre-period data"
            if cup is None
            else f"  CUPED: lift {_pp(cup['absolute_lift'])}  95% CI {_ci(cup['absolute_lift_ci'], _pp)}, "
            f"p = {_p(cup['p_value'])}, variance reduced by {cup['variance_reduction']:.1%}"
        )
    srm = report["srm"]
    lines += [
        "",
        f"sample ratio: observed {srm['observed']} vs expected {[round(e, 1) for e in srm['expected']]}, "
        f"chi² = {srm['chi2']:.2f}, p = {_p(srm['p_value'])}" + ("  ** SRM ALARM **" if srm["alarm"] else "  (ok)"),
    ]
    lines += [f"warning: {w}" for w in report["warnings"]]
    return "\n".join(lines)


def chart_png(report: dict[str, Any]) -> bytes:
    """A PNG of the cumulative conversion rate per variant at each daily look (matplotlib, Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    times = [datetime.fromisoformat(d["time"].replace("Z", "+00:00")) for d in report["daily"]]
    for v in report["variants"]:
        rates = [d[v["name"]]["conversion_rate"] for d in report["daily"]]
        percent = [math.nan if r is None else 100 * r for r in rates]
        # matplotlib converts datetimes through its units registry, which its stubs do not model
        ax.plot(times, percent, marker="o", ms=3, label=v["name"])  # type: ignore[arg-type]
    ax.set_title(f"{report['experiment']['name']}: cumulative {report['conversion']} rate")
    ax.set_ylabel("conversion rate (%)")
    ax.set_xlabel("look (UTC)")
    ax.grid(alpha=0.3)
    if report["variants"]:
        ax.legend()
    if not times:
        ax.text(0.5, 0.5, "no looks yet", ha="center", va="center", transform=ax.transAxes)
    fig.autofmt_xdate()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def write_chart(report: dict[str, Any], path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(chart_png(report))
    return path


def experiment_chart(store: EventStore, name: str, *, as_of: datetime | float | None = None) -> bytes:
    """The chart of :func:`experiment_report` as PNG bytes (what the API serves)."""
    return chart_png(experiment_report(store, name, as_of=as_of))


# --------------------------------------------------------------------------------------------- formatting


def _num(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _pair(a: float, b: float) -> list[float | None] | None:
    if not (math.isfinite(a) or math.isfinite(b)):
        return None
    return [_num(a), _num(b)]


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _p(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def _pct(x: float | None, signed: bool = False) -> str:
    return "n/a" if x is None else (f"{x:+.1%}" if signed else f"{x:.2%}")


def _pp(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.2f} pp"


def _money(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _ci(pair: list[float | None] | None, fmt) -> str:
    if pair is None:
        return "n/a"
    lo, hi = pair
    return f"[{'-∞' if lo is None else fmt(lo)}, {'+∞' if hi is None else fmt(hi)}]"
