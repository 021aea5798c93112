"""Statistics for A/B tests: pure functions of counts or per-unit arrays (numpy, scipy), no I/O.

Conventions: ``t`` is a treatment arm, ``c`` the control; ``x`` conversions, ``n`` units; lifts are
treatment minus control. Intervals are two-sided at level 1 - alpha. Formulas and references are given in
each docstring and collected in docs/EXPERIMENTS.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as st

#: Default mixing standard deviation of the mSPRT, relative to the pooled conversion rate.
DEFAULT_RELATIVE_TAU = 0.5


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its standard error, a two-sided (1 - alpha) interval and a p-value for 0."""

    value: float
    se: float
    low: float
    high: float
    p_value: float

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "se": self.se, "ci_low": self.low, "ci_high": self.high, "p_value": self.p_value}


def _z(alpha: float) -> float:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1); got {alpha}")
    return float(st.norm.ppf(1 - alpha / 2))


def _check_counts(x: int, n: int) -> None:
    if n < 0 or x < 0 or x > n:
        raise ValueError(f"need 0 ≤ conversions ≤ units; got {x} of {n}")


def _two_sided_p(z: float) -> float:
    return float(2 * st.norm.sf(abs(z)))


# --------------------------------------------------------------------------------------------- proportions


def wilson_interval(x: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for a proportion (Wilson 1927); (nan, nan) when n = 0."""
    _check_counts(x, n)
    if n == 0:
        return (math.nan, math.nan)
    z = _z(alpha)
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def two_proportion_ztest(x_t: int, n_t: int, x_c: int, n_c: int) -> tuple[float, float]:
    """Pooled two-proportion z test of p_t = p_c: returns (z, two-sided p).

    z = (p̂_t - p̂_c) / sqrt(p̂ (1 - p̂) (1/n_t + 1/n_c)), p̂ = (x_t + x_c) / (n_t + n_c). z² equals Pearson's
    chi-square on the 2×2 table without continuity correction. (0, 1) when the pooled rate is 0 or 1.
    """
    _check_counts(x_t, n_t)
    _check_counts(x_c, n_c)
    if n_t == 0 or n_c == 0:
        return (math.nan, math.nan)
    pooled = (x_t + x_c) / (n_t + n_c)
    var = pooled * (1 - pooled) * (1 / n_t + 1 / n_c)
    if var <= 0:
        return (0.0, 1.0)
    z = (x_t / n_t - x_c / n_c) / math.sqrt(var)
    return (z, _two_sided_p(z))


def wald_diff(x_t: int, n_t: int, x_c: int, n_c: int, alpha: float = 0.05) -> Estimate:
    """Absolute lift p_t - p_c with the Wald (unpooled) interval, Newcombe (1998) method 1:
    d ± z sqrt(p_t(1-p_t)/n_t + p_c(1-p_c)/n_c); the p-value is the Wald z test's."""
    _check_counts(x_t, n_t)
    _check_counts(x_c, n_c)
    if n_t == 0 or n_c == 0:
        return Estimate(math.nan, math.nan, math.nan, math.nan, math.nan)
    p_t, p_c = x_t / n_t, x_c / n_c
    d = p_t - p_c
    se = math.sqrt(p_t * (1 - p_t) / n_t + p_c * (1 - p_c) / n_c)
    z = _z(alpha)
    p = _two_sided_p(d / se) if se > 0 else (1.0 if d == 0 else 0.0)
    return Estimate(d, se, d - z * se, d + z * se, p)


def newcombe_diff(x_t: int, n_t: int, x_c: int, n_c: int, alpha: float = 0.05) -> Estimate:
    """Absolute lift p_t - p_c with Newcombe's hybrid score interval (Newcombe 1998, method 10), built from
    the two Wilson intervals (l_t, u_t), (l_c, u_c):

        low  = d - sqrt((p_t - l_t)² + (u_c - p_c)²)
        high = d + sqrt((u_t - p_t)² + (p_c - l_c)²)

    It keeps its coverage near 0 or 1 and with few conversions, where the Wald interval does not. ``se`` and
    the p-value are the Wald ones (the p-value of the report's test is :func:`two_proportion_ztest`).
    """
    wald = wald_diff(x_t, n_t, x_c, n_c, alpha)
    if n_t == 0 or n_c == 0:
        return wald
    p_t, p_c = x_t / n_t, x_c / n_c
    l_t, u_t = wilson_interval(x_t, n_t, alpha)
    l_c, u_c = wilson_interval(x_c, n_c, alpha)
    d = p_t - p_c
    low = d - math.sqrt((p_t - l_t) ** 2 + (u_c - p_c) ** 2)
    high = d + math.sqrt((u_t - p_t) ** 2 + (p_c - l_c) ** 2)
    return Estimate(d, wald.se, low, high, wald.p_value)


def relative_lift(x_t: int, n_t: int, x_c: int, n_c: int, alpha: float = 0.05) -> Estimate:
    """Relative lift p_t / p_c - 1 with the delta-method interval on the log scale (Katz et al. 1978):

        log(RR) ± z sqrt(1/x_t - 1/n_t + 1/x_c - 1/n_c),  RR = p_t / p_c,  interval = exp(·) - 1

    ``se`` is that of log(RR). The interval is asymmetric and stays above -100%. Undefined (nan) when
    either arm has no conversions.
    """
    _check_counts(x_t, n_t)
    _check_counts(x_c, n_c)
    if min(x_t, x_c, n_t, n_c) == 0:
        return Estimate(math.nan, math.nan, math.nan, math.nan, math.nan)
    log_rr = math.log((x_t / n_t) / (x_c / n_c))
    se = math.sqrt(max(0.0, 1 / x_t - 1 / n_t + 1 / x_c - 1 / n_c))
    z = _z(alpha)
    p = _two_sided_p(log_rr / se) if se > 0 else (1.0 if log_rr == 0 else 0.0)
    return Estimate(math.expm1(log_rr), se, math.expm1(log_rr - z * se), math.expm1(log_rr + z * se), p)


# ------------------------------------------------------------------------------------------------- means


def mean_estimate(values: np.ndarray, alpha: float = 0.05) -> Estimate:
    """Mean of per-unit values (e.g. revenue, zeros included) with a normal-approximation interval,
    se = s / sqrt(n) (sample standard deviation, ddof = 1); the p-value tests mean = 0."""
    v = np.asarray(values, dtype=np.float64)  # (n,)
    if v.size == 0:
        return Estimate(math.nan, math.nan, math.nan, math.nan, math.nan)
    m = float(v.mean())
    se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan
    z = _z(alpha)
    p = _two_sided_p(m / se) if se > 0 else math.nan
    return Estimate(m, se, m - z * se, m + z * se, p)


def welch_diff(values_t: np.ndarray, values_c: np.ndarray, alpha: float = 0.05) -> Estimate:
    """Difference of means with the unpooled (Welch) standard error sqrt(s_t²/n_t + s_c²/n_c) and a normal
    interval and p-value: the large-sample test used for revenue per exposure (heavy-tailed revenue needs
    hundreds of units per arm for the normal approximation to hold)."""
    a = np.asarray(values_t, dtype=np.float64)  # (n_t,)
    b = np.asarray(values_c, dtype=np.float64)  # (n_c,)
    if a.size < 2 or b.size < 2:
        return Estimate(math.nan, math.nan, math.nan, math.nan, math.nan)
    d = float(a.mean() - b.mean())
    se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    z = _z(alpha)
    p = _two_sided_p(d / se) if se > 0 else (1.0 if d == 0 else 0.0)
    return Estimate(d, se, d - z * se, d + z * se, p)


# ------------------------------------------------------------------------------------------------- SRM


@dataclass(frozen=True)
class SampleRatio:
    observed: tuple[int, ...]
    expected: tuple[float, ...]
    chi2: float
    p_value: float
    alarm: bool


def sample_ratio_mismatch(observed: Sequence[int], weights: Sequence[float], threshold: float = 1e-3) -> SampleRatio:
    """Pearson chi-square goodness of fit of the units per variant to the configured weights (k - 1 degrees
    of freedom). ``alarm`` when p < ``threshold`` (0.001: an SRM this strong means the assignment or the
    logging is broken, and the comparison cannot be trusted; Fabijan et al. 2019)."""
    obs = np.asarray(observed, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if obs.shape != w.shape or obs.size < 2 or (w <= 0).any():
        raise ValueError("need one positive weight per variant and at least two variants")
    total = obs.sum()
    expected = total * w / w.sum()
    if total == 0:
        return SampleRatio(tuple(int(o) for o in obs), tuple(expected.tolist()), 0.0, 1.0, False)
    chi2, p = st.chisquare(obs, expected)
    return SampleRatio(tuple(int(o) for o in obs), tuple(expected.tolist()), float(chi2), float(p), bool(p < threshold))


# ------------------------------------------------------------------------------------- always-valid tests


def msprt_statistic(estimate: float, variance: float, tau: float, theta0: float = 0.0) -> float:
    """The mixture sequential probability ratio Λ of Johari, Koomen, Pekelis & Walsh (2017, 2022) for a
    normal estimate with known ``variance`` (here the plug-in variance of the estimated lift), mixed over
    alternatives θ ~ N(theta0, tau²):

        Λ = sqrt(V / (V + τ²)) · exp( τ² (θ̂ - θ0)² / (2 V (V + τ²)) )

    which with V = σ²/n is their eq. for Λ_n^{H,θ0}. Under H0 it is a nonnegative martingale with mean 1, so
    P(Λ ever ≥ 1/α) ≤ α (Ville's inequality), however often one looks. Λ = 1 when V ≤ 0 (no information).
    """
    if not tau > 0:
        raise ValueError(f"the mixing standard deviation tau must be > 0; got {tau}")
    if not variance > 0 or not math.isfinite(variance) or not math.isfinite(estimate):
        return 1.0
    t2 = tau * tau
    log_lambda = 0.5 * math.log(variance / (variance + t2)) + t2 * (estimate - theta0) ** 2 / (
        2 * variance * (variance + t2)
    )
    return math.exp(min(log_lambda, 700.0))


def msprt_halfwidth(variance: float, tau: float, alpha: float) -> float:
    """Half-width of the always-valid confidence interval at one look, the set of θ0 with Λ(θ0) < 1/α:

    |θ̂ - θ0| < sqrt( V (V + τ²) / τ² · (2 log(1/α) + log((V + τ²) / V)) )
    """
    if not variance > 0 or not math.isfinite(variance):
        return math.inf
    t2 = tau * tau
    return math.sqrt(variance * (variance + t2) / t2 * (2 * math.log(1 / alpha) + math.log((variance + t2) / variance)))


@dataclass(frozen=True)
class SequentialResult:
    """The always-valid inference after each look: p-values (running minimum of 1/Λ, capped at 1) and the
    confidence sequence (running intersection of the per-look intervals)."""

    p_values: np.ndarray  # (looks,)
    low: np.ndarray  # (looks,)
    high: np.ndarray  # (looks,)
    taus: np.ndarray  # (looks,)

    @property
    def p_value(self) -> float:
        return float(self.p_values[-1]) if self.p_values.size else 1.0

    def rejected(self, alpha: float) -> bool:
        return self.p_value < alpha


def sequential_two_proportions(
    x_t: Sequence[int] | np.ndarray,  # (looks,) each
    n_t: Sequence[int] | np.ndarray,
    x_c: Sequence[int] | np.ndarray,
    n_c: Sequence[int] | np.ndarray,
    *,
    alpha: float = 0.05,
    tau: float | None = None,
    relative_tau: float = DEFAULT_RELATIVE_TAU,
) -> SequentialResult:
    """Always-valid p-values and a confidence sequence for p_t - p_c over a series of looks (cumulative counts
    at each look), by the mSPRT (:func:`msprt_statistic`) with the unpooled plug-in variance
    V = p̂_t(1-p̂_t)/n_t + p̂_c(1-p̂_c)/n_c.

    ``tau`` is the mixing standard deviation on the absolute-lift scale. When None, each look uses
    ``relative_tau`` × the pooled conversion rate at that look (a plug-in, like V): mixing over relative lifts
    of about ±50%. Power is best with tau near the effect one expects, and a tau too small costs far more
    than one too large: log Λ = θ̂²/(2V) · τ²/(V + τ²) - ½ log(1 + τ²/V), so with τ² ≪ V the evidence is
    damped by τ²/V, while too large a τ only costs the logarithmic term. Hence the generous default; set
    ``Experiment.msprt_tau`` from the effects of past experiments when they exist, as Johari et al. advise.
    Validity holds for any fixed tau; the simulator checks the plug-in version under daily peeking.
    """
    arrays = [np.asarray(a, dtype=np.float64) for a in (x_t, n_t, x_c, n_c)]
    xt, nt, xc, nc = arrays
    if len({a.shape for a in arrays}) != 1:
        raise ValueError("x_t, n_t, x_c and n_c need one entry per look")
    looks = xt.size
    p_values, lows, highs, taus = (np.empty(looks) for _ in range(4))
    running_p, low, high = 1.0, -math.inf, math.inf
    for i in range(looks):
        if nt[i] > 0 and nc[i] > 0:
            pt, pc = xt[i] / nt[i], xc[i] / nc[i]
            var = pt * (1 - pt) / nt[i] + pc * (1 - pc) / nc[i]
            pooled = (xt[i] + xc[i]) / (nt[i] + nc[i])
            t = tau if tau is not None else relative_tau * pooled
            if t > 0 and var > 0:
                running_p = min(running_p, 1.0 / msprt_statistic(pt - pc, var, t))
                half = msprt_halfwidth(var, t, alpha)
                low, high = max(low, pt - pc - half), min(high, pt - pc + half)
        else:
            t = tau if tau is not None else math.nan
        p_values[i], lows[i], highs[i], taus[i] = min(1.0, running_p), low, high, t
    return SequentialResult(p_values, lows, highs, taus)


# --------------------------------------------------------------------------------------------------- CUPED


@dataclass(frozen=True)
class CupedResult:
    """The CUPED-adjusted difference of means with its interval, next to the unadjusted one."""

    theta: float
    adjusted: Estimate
    unadjusted: Estimate
    variance_reduction: float  # 1 - Var(Y_cuped) / Var(Y), pooled over arms: about corr(Y, X)²

    def to_dict(self) -> dict[str, object]:
        return {
            "theta": self.theta,
            "adjusted": self.adjusted.to_dict(),
            "unadjusted": self.unadjusted.to_dict(),
            "variance_reduction": self.variance_reduction,
        }


def cuped(
    y_t: np.ndarray, x_t: np.ndarray, y_c: np.ndarray, x_c: np.ndarray, alpha: float = 0.05
) -> CupedResult | None:
    """CUPED (Deng, Xu, Kohavi & Walker 2013): with a pre-period covariate X per unit, unaffected by the
    treatment, compare the means of

        Y_cuped = Y - θ (X - mean(X)),   θ = Cov(Y, X) / Var(X)

    with θ and mean(X) pooled over both arms (their eq. 3 and section 3.3). The difference is unbiased and its
    variance shrinks by the factor 1 - ρ²(Y, X). Returns None when X has no variance (no pre-period data).
    """
    yt, xt, yc, xc = (np.asarray(a, dtype=np.float64) for a in (y_t, x_t, y_c, x_c))
    if yt.shape != xt.shape or yc.shape != xc.shape:
        raise ValueError("each arm needs one covariate value per unit")
    y = np.concatenate([yt, yc])
    x = np.concatenate([xt, xc])
    if y.size < 3 or x.var() <= 0:
        return None
    theta = float(np.cov(y, x, ddof=1)[0, 1] / x.var(ddof=1))
    mx = x.mean()
    adj_t, adj_c = yt - theta * (xt - mx), yc - theta * (xc - mx)
    vy = y.var(ddof=1)
    reduction = 1 - np.concatenate([adj_t, adj_c]).var(ddof=1) / vy if vy > 0 else 0.0
    return CupedResult(theta, welch_diff(adj_t, adj_c, alpha), welch_diff(yt, yc, alpha), float(reduction))


# --------------------------------------------------------------------------------------------------- looks


@dataclass(frozen=True)
class Looks:
    """Cumulative counts per arm at each look time (daily peeking): what a team sees each morning."""

    times: np.ndarray  # (looks,) epoch seconds
    n_t: np.ndarray  # (looks,)
    x_t: np.ndarray  # (looks,)
    n_c: np.ndarray  # (looks,)
    x_c: np.ndarray  # (looks,)

    def fixed_horizon_p_values(self) -> np.ndarray:
        """The two-proportion test's p-value at each look (valid for one pre-planned look only)."""
        return np.array(
            [
                two_proportion_ztest(int(a), int(b), int(c), int(d))[1]
                for a, b, c, d in zip(self.x_t, self.n_t, self.x_c, self.n_c, strict=True)
            ]
        )

    def sequential(
        self, *, alpha: float = 0.05, tau: float | None = None, relative_tau: float = DEFAULT_RELATIVE_TAU
    ) -> SequentialResult:
        return sequential_two_proportions(
            self.x_t, self.n_t, self.x_c, self.n_c, alpha=alpha, tau=tau, relative_tau=relative_tau
        )


def looks(first_ts: np.ndarray, conversion_ts: np.ndarray, treated: np.ndarray, look_times: Sequence[float]) -> Looks:
    """Cumulative units and conversions per arm at each look.

    ``first_ts`` is each unit's first exposure (epoch s), ``conversion_ts`` its first conversion after it
    (nan if none), ``treated`` whether it is in the treatment arm (the others are the control). At look time
    T a unit counts if first exposed by T, and as converted if it converted by T.
    """
    f = np.asarray(first_ts, dtype=np.float64)  # (units,)
    cv = np.asarray(conversion_ts, dtype=np.float64)  # (units,) nan = never
    tr = np.asarray(treated, dtype=bool)  # (units,)
    times = np.asarray(look_times, dtype=np.float64)  # (looks,)
    if not (f.shape == cv.shape == tr.shape):
        raise ValueError("first_ts, conversion_ts and treated need one entry per unit")
    if times.size and (np.diff(times) < 0).any():
        raise ValueError("look times must be in increasing order")
    converted_at = np.where(np.isnan(cv), np.inf, cv)

    def counts(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = np.searchsorted(np.sort(f[mask]), times, side="right")
        x = np.searchsorted(np.sort(converted_at[mask]), times, side="right")
        return n, x

    n_t, x_t = counts(tr)
    n_c, x_c = counts(~tr)
    return Looks(times, n_t, x_t, n_c, x_c)
