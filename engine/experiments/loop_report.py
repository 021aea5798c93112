"""The closed loop's report: per day and arm, hidden-taste match, conversion and revenue per exposure with 95%
intervals; the arms' conversion pooled over the last days; how soon new shoppers catch up with known ones.

An *exposure* is a visit (one or two sets in one session); a visit *converts* when it ends in a purchase.
Intervals: Wilson for conversion; percentile bootstrap over shoppers (1,000 resamples, seeded) for match and
revenue per exposure. The pooled comparison over days ``compare_from``..``days`` and every seed has two tests:

- **paired permutation over shoppers** (the main one): the arms see the same shoppers on the same days with
  the same random numbers, so each (seed, shopper) gives a difference d = converting visits in arm A − in arm
  B; the statistic is mean d, and its null distribution flips the sign of each d at random (20,000 draws);
- the **two-proportion z test** on the pooled counts, which ignores that pairing (conservative here).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from engine.experiments.loop import LoopRun, LoopSettings, VisitOutcome
from engine.experiments.stats import two_proportion_ztest, wilson_interval

BOOTSTRAP = 1000
PERMUTATIONS = 20_000


def loop_report(runs: Sequence[LoopRun], settings: LoopSettings, *, treated: str, control: str) -> dict[str, Any]:
    """The report of the loop ``runs`` (one per seed; ``settings`` as run, any seed) comparing arm ``treated``
    (retrained) with ``control`` (frozen)."""
    visits = [v for run in runs for v in run.visits]
    arms = [treated, control]
    rng = np.random.default_rng(0xB007)
    days = []
    for day in range(1, settings.days + 1):
        row: dict[str, Any] = {"day": day}
        for arm in arms:
            row[arm] = day_figures([v for v in visits if v.arm == arm and v.day == day], settings, rng)
        days.append(row)
    compare = pooled_comparison(visits, settings, treated=treated, control=control, rng=rng)
    catch = {arm: _catch_up(days, arm, settings) for arm in arms}
    goals = _goals(compare, catch[treated], settings, treated=treated, control=control)
    nights = [
        {"arm": n.arm, "seed": n.seed, "day": n.day, "served": n.served, "next": n.next, "seconds": round(n.seconds, 1)}
        for run in runs
        for n in run.nights
    ]
    return {
        "settings": {**asdict(settings), "seeds": [run.seed for run in runs]},
        "definitions": {
            "exposure": "a visit: one or two image sets in one session",
            "conversion": "visits that end in a purchase / exposures (95% Wilson interval)",
            "match": "mean Taste.affinity of the shown conditions, over the day's sets (bootstrap over shoppers)",
            "revenue_per_exposure": "catalogue price of the items bought / exposures (bootstrap over shoppers)",
        },
        "arms": {"treated": treated, "control": control},
        "days": days,
        "comparison": compare,
        "catch_up": catch,
        "goals": goals,
        "nights": nights,
        "requests": sum(run.requests for run in runs),
    }


def day_figures(visits: Sequence[VisitOutcome], settings: LoopSettings, rng: np.random.Generator) -> dict[str, Any]:
    """One arm's figures over ``visits`` (one day's, any number of seeds)."""
    n = len(visits)
    converted = sum(v.purchases > 0 for v in visits)
    revenue = np.array([v.revenue for v in visits])
    out: dict[str, Any] = {
        "exposures": n,
        "sets": sum(len(v.sets) for v in visits),
        "conversions": converted,
        "conversion": converted / n if n else None,
        "conversion_ci": _pair(wilson_interval(converted, n)) if n else None,
        "revenue_per_exposure": float(revenue.mean()) if n else None,
        "revenue_per_exposure_ci": _bootstrap_mean(revenue, np.ones(n), rng) if n else None,
    }
    for group, keep in (("all", lambda v: True), ("known", lambda v: not v.new), ("new", lambda v: v.new)):
        mine = [v for v in visits if keep(v)]
        total, count = _match_sums(mine)
        out[f"match_{group}"] = float(total.sum() / count.sum()) if count.sum() else None
        out[f"match_{group}_ci"] = _bootstrap_mean(total, count, rng) if count.sum() else None
    new_first = [v.sets[0].strategy for v in visits if v.new and v.sets]
    out["new_cold_start_share"] = sum(s == "cold_start" for s in new_first) / len(new_first) if new_first else None
    out["strategies"] = _counts(s.strategy for v in visits for s in v.sets)
    out["bundle_versions"] = sorted({s.bundle_version for v in visits for s in v.sets})
    return out


def pooled_comparison(
    visits: Sequence[VisitOutcome],
    settings: LoopSettings,
    *,
    treated: str,
    control: str,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Conversion and revenue per exposure of the two arms over days ``compare_from``..``days``, every seed."""
    window = [v for v in visits if v.day >= settings.compare_from]
    per_arm: dict[str, dict[str, Any]] = {}
    for arm in (treated, control):
        mine = [v for v in window if v.arm == arm]
        x = sum(v.purchases > 0 for v in mine)
        revenue = np.array([v.revenue for v in mine])
        per_arm[arm] = {
            "exposures": len(mine),
            "conversions": x,
            "conversion": x / len(mine) if mine else None,
            "conversion_ci": _pair(wilson_interval(x, len(mine))) if mine else None,
            "revenue_per_exposure": float(revenue.mean()) if mine else None,
            "revenue_per_exposure_ci": _bootstrap_mean(revenue, np.ones(len(mine)), rng) if mine else None,
        }
    t, c = per_arm[treated], per_arm[control]
    _, p_z = two_proportion_ztest(t["conversions"], t["exposures"], c["conversions"], c["exposures"])
    conv_diff, rev_diff = _paired_differences(window, treated, control)
    return {
        "days": [settings.compare_from, settings.days],
        treated: t,
        control: c,
        "conversion_difference": float(conv_diff.sum() / max(t["exposures"], 1)),
        "paired_shoppers": len(conv_diff),
        "p_value_paired_permutation": _sign_flip_p(conv_diff, rng),
        "p_value_two_proportion_z": p_z,
        "revenue_difference_per_exposure": float(rev_diff.sum() / max(t["exposures"], 1)),
        "p_value_revenue_paired_permutation": _sign_flip_p(rev_diff, rng),
    }


def _paired_differences(window: Sequence[VisitOutcome], treated: str, control: str) -> tuple[np.ndarray, np.ndarray]:
    """Per (seed, shopper): converting visits and revenue in ``treated`` minus those in ``control``."""
    conv: dict[tuple[int, int], float] = {}
    rev: dict[tuple[int, int], float] = {}
    for v in window:
        sign = 1.0 if v.arm == treated else -1.0 if v.arm == control else 0.0
        key = (v.seed, v.shopper)
        conv[key] = conv.get(key, 0.0) + sign * (v.purchases > 0)
        rev[key] = rev.get(key, 0.0) + sign * v.revenue
    keys = sorted(conv)
    return np.array([conv[k] for k in keys]), np.array([rev[k] for k in keys])


def _sign_flip_p(d: np.ndarray, rng: np.random.Generator) -> float | None:
    """Two-sided p of mean(d) = 0 against random sign flips of each d (a paired permutation test)."""
    if len(d) == 0:
        return None
    observed = abs(d.sum())
    flips = rng.choice(np.array([-1.0, 1.0]), size=(PERMUTATIONS, len(d)))
    extreme = int((np.abs(flips @ d) >= observed - 1e-9).sum())
    return (1 + extreme) / (1 + PERMUTATIONS)


def _catch_up(days: Sequence[dict[str, Any]], arm: str, settings: LoopSettings) -> dict[str, Any]:
    """New shoppers' match as a share of known shoppers', per day, and the first day it reaches ``catch_up``."""
    ratios = []
    for row in days:
        f = row[arm]
        known, new = f["match_known"], f["match_new"]
        ratios.append(new / known if known and new is not None else None)
    reached = next((d for d, r in enumerate(ratios, start=1) if r is not None and r >= settings.catch_up), None)
    at = settings.catch_up_day
    return {
        "ratio_by_day": [None if r is None else round(r, 4) for r in ratios],
        "first_day_reached": reached,
        f"ratio_on_day_{at}": ratios[at - 1] if at <= len(ratios) else None,
        "target": settings.catch_up,
    }


def _goals(
    compare: dict[str, Any], catch: dict[str, Any], settings: LoopSettings, *, treated: str, control: str
) -> list[dict[str, Any]]:
    t, c = compare[treated], compare[control]
    p = compare["p_value_paired_permutation"]
    beats = t["conversion"] is not None and c["conversion"] is not None and t["conversion"] > c["conversion"]
    at = settings.catch_up_day
    ratio = catch[f"ratio_on_day_{at}"]
    return [
        {
            "goal": f"{treated} conversion beats {control} over days {settings.compare_from}-{settings.days} "
            "(pooled, paired permutation p < 0.05)",
            "met": bool(beats and p is not None and p < 0.05),
        },
        {
            "goal": f"new shoppers reach {settings.catch_up:.0%} of known shoppers' hidden-taste match by day {at} "
            f"({treated} arm)",
            "met": ratio is not None and ratio >= settings.catch_up,
        },
    ]


def render_loop_report(report: dict[str, Any]) -> str:
    """The report as a text table (per day and arm) with the pooled comparison and the goals."""
    treated, control = report["arms"]["treated"], report["arms"]["control"]
    s = report["settings"]
    lines = [
        f"closed loop through the HTTP API: {s['days']} days, seeds {s['seeds']}, {s['shoppers']} shoppers "
        f"({s['new_share']:.0%} new), visit rate {s['visit_rate']:.0%}/day, {s['n_images']} images per set, "
        f"{report['requests']} requests",
        "",
        f"{'day':>3}  {'arm':<10} {'visits':>6}  {'match known':<20} {'match new':<20} {'new/known':>9}  "
        f"{'conversion':<24} {'revenue/exposure':<22} {'new cold':>8}",
    ]
    for row in report["days"]:
        for arm in (treated, control):
            f = row[arm]
            ratio = f["match_new"] / f["match_known"] if f["match_known"] and f["match_new"] is not None else None
            lines.append(
                f"{row['day']:>3}  {arm:<10} {f['exposures']:>6}  {_est(f['match_known'], f['match_known_ci']):<20} "
                f"{_est(f['match_new'], f['match_new_ci']):<20} {_num(ratio, '.2f'):>9}  "
                f"{_est(f['conversion'], f['conversion_ci'], pct=True):<24} "
                f"{_est(f['revenue_per_exposure'], f['revenue_per_exposure_ci'], fmt='.2f'):<22} "
                f"{_num(f['new_cold_start_share'], '.0%'):>8}"
            )
    cmp = report["comparison"]
    lo, hi = cmp["days"]
    lines += ["", f"days {lo}-{hi}, pooled over seeds:"]
    for arm in (treated, control):
        f = cmp[arm]
        lines.append(
            f"  {arm:<10} conversion {f['conversions']}/{f['exposures']} = "
            f"{_est(f['conversion'], f['conversion_ci'], pct=True)}, revenue per exposure "
            f"{_est(f['revenue_per_exposure'], f['revenue_per_exposure_ci'], fmt='.2f')}"
        )
    lines.append(
        f"  difference {100 * cmp['conversion_difference']:+.2f} pp: paired permutation p = "
        f"{_num(cmp['p_value_paired_permutation'], '.3g')} ({cmp['paired_shoppers']} shoppers), two-proportion z "
        f"p = {_num(cmp['p_value_two_proportion_z'], '.3g')}; revenue {cmp['revenue_difference_per_exposure']:+.2f} "
        f"per exposure, paired p = {_num(cmp['p_value_revenue_paired_permutation'], '.3g')}"
    )
    for arm in (treated, control):
        c = report["catch_up"][arm]
        at = s["catch_up_day"]
        lines.append(
            f"  {arm}: new/known match on day {at} = {_num(c[f'ratio_on_day_{at}'], '.2f')}; first day ≥ "
            f"{c['target']:.0%}: {c['first_day_reached'] or 'never'}"
        )
    lines.append("")
    lines += [f"goal {'MET' if g['met'] else 'MISSED'}: {g['goal']}" for g in report["goals"]]
    return "\n".join(lines)


def _match_sums(visits: Sequence[VisitOutcome]) -> tuple[np.ndarray, np.ndarray]:
    """Per visit (= per shopper: one visit a day): the sum of its sets' match and the number of sets."""
    return np.array([sum(s.match for s in v.sets) for v in visits]), np.array([len(v.sets) for v in visits], float)


def _bootstrap_mean(total: np.ndarray, count: np.ndarray, rng: np.random.Generator) -> list[float]:
    """95% percentile interval of sum(total) / sum(count), resampling the shoppers (entries)."""
    idx = rng.integers(0, len(total), size=(BOOTSTRAP, len(total)))
    stats = total[idx].sum(axis=1) / np.maximum(count[idx].sum(axis=1), 1e-12)
    return _pair(tuple(np.percentile(stats, [2.5, 97.5])))


def _counts(values: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


def _pair(pair: Sequence[float]) -> list[float]:
    return [float(pair[0]), float(pair[1])]


def _num(x: float | None, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


def _est(x: float | None, ci: Sequence[float] | None, *, pct: bool = False, fmt: str = ".3f") -> str:
    if x is None or ci is None:
        return "n/a"
    if pct:
        return f"{x:.1%} [{ci[0]:.1%}, {ci[1]:.1%}]"
    return f"{format(x, fmt)} [{format(ci[0], fmt)}, {format(ci[1], fmt)}]"
