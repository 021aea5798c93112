"""Known answers for the experiment statistics, from published examples or an independent computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st
from scipy.stats.contingency import chi2_contingency, relative_risk

from engine.experiments import stats


def test_two_proportion_z_matches_pearson_chi_square():
    z, p = stats.two_proportion_ztest(45, 100, 60, 100)
    # by hand: pooled 0.525, se = sqrt(0.525 × 0.475 × 0.02) = 0.070622, z = -0.15 / se
    assert z == pytest.approx(-2.12398, abs=1e-4)
    chi2, p_chi, _, _ = chi2_contingency([[45, 55], [60, 40]], correction=False)
    assert z * z == pytest.approx(chi2)
    assert p == pytest.approx(p_chi)
    assert stats.two_proportion_ztest(0, 10, 0, 10) == (0.0, 1.0)


def test_newcombe_and_wald_intervals_match_newcombe_1998_table_ii():
    # Newcombe (1998), Statistics in Medicine 17:873-890, Table II, example (a): 56/70 - 48/80
    wald = stats.wald_diff(56, 70, 48, 80)
    assert (wald.low, wald.high) == pytest.approx((0.0575, 0.3425), abs=1e-4)
    hybrid = stats.newcombe_diff(56, 70, 48, 80)
    assert hybrid.value == pytest.approx(0.2)
    assert (hybrid.low, hybrid.high) == pytest.approx((0.0524, 0.3339), abs=1e-4)
    # example (d) 0/10 - 0/20: Wald degenerates to [0, 0], the hybrid interval does not
    assert (stats.newcombe_diff(0, 10, 0, 20).low, stats.newcombe_diff(0, 10, 0, 20).high) == pytest.approx(
        (-0.1611, 0.2775), abs=1e-4
    )


@pytest.mark.parametrize(("x", "n"), [(0, 10), (3, 17), (81, 263), (50, 50)])
def test_wilson_interval_matches_scipy(x, n):
    ci = st.binomtest(x, n).proportion_ci(0.95, method="wilson")
    assert stats.wilson_interval(x, n) == pytest.approx((ci.low, ci.high))


@pytest.mark.parametrize(("x_t", "n_t", "x_c", "n_c"), [(60, 1000, 40, 1000), (12, 300, 30, 400)])
def test_relative_lift_interval_is_katz_as_in_scipy(x_t, n_t, x_c, n_c):
    rr = relative_risk(x_t, n_t, x_c, n_c)
    ci = rr.confidence_interval(0.95)
    got = stats.relative_lift(x_t, n_t, x_c, n_c)
    assert got.value == pytest.approx(rr.relative_risk - 1)
    assert (got.low, got.high) == pytest.approx((ci.low - 1, ci.high - 1))
    assert math.isnan(stats.relative_lift(0, 10, 5, 10).value)


def test_mean_and_welch_difference_by_hand():
    a, b = np.array([0.0, 0.0, 10.0, 30.0]), np.array([0.0, 5.0, 5.0])
    m = stats.mean_estimate(a)
    assert m.value == 10.0
    assert m.se == pytest.approx(np.std(a, ddof=1) / 2)
    d = stats.welch_diff(a, b)
    se = math.sqrt(a.var(ddof=1) / 4 + b.var(ddof=1) / 3)
    assert d.value == pytest.approx(10.0 - 10 / 3)
    assert d.se == pytest.approx(se)
    assert (d.low, d.high) == pytest.approx((d.value - 1.959964 * se, d.value + 1.959964 * se), abs=1e-5)
    assert d.p_value == pytest.approx(2 * st.norm.sf(d.value / se))


def test_sample_ratio_mismatch_by_hand():
    srm = stats.sample_ratio_mismatch([5000, 5200], [1, 1])
    assert srm.expected == (5100.0, 5100.0)
    assert srm.chi2 == pytest.approx(2 * 100**2 / 5100)  # 3.9216
    assert srm.p_value == pytest.approx(0.04767, abs=1e-5)
    assert not srm.alarm
    assert stats.sample_ratio_mismatch([5000, 5600], [1, 1]).alarm
    assert not stats.sample_ratio_mismatch([2500, 7500], [1, 3]).alarm
    with pytest.raises(ValueError):
        stats.sample_ratio_mismatch([1, 2], [1])


def test_msprt_statistic_by_hand_and_its_interval_inverts_it():
    # θ̂ = 0.02, V = τ² = 1e-4: Λ = sqrt(1/2) · exp(1e-4 · 4e-4 / (2 · 1e-4 · 2e-4)) = e / sqrt(2)
    assert stats.msprt_statistic(0.02, 1e-4, 0.01) == pytest.approx(math.e / math.sqrt(2))
    assert stats.msprt_statistic(0.0, 1e-4, 0.01) == pytest.approx(math.sqrt(0.5))
    assert stats.msprt_statistic(0.3, 0.0, 0.01) == 1.0  # no information yet
    half = stats.msprt_halfwidth(1e-4, 0.01, 0.05)
    assert stats.msprt_statistic(0.02, 1e-4, 0.01, theta0=0.02 + half) == pytest.approx(1 / 0.05)


def test_always_valid_p_values_do_not_inflate_under_daily_peeking():
    """400 A/A tests with 30 looks: the naive peeker rejects far more than α, the mSPRT no more than α."""
    rng = np.random.default_rng(0)
    n_runs, looks, per_look, rate, alpha = 400, 30, 100, 0.1, 0.05
    naive = sequential = 0
    for _ in range(n_runs):
        n = np.arange(1, looks + 1) * per_look
        x_t = np.cumsum(rng.binomial(per_look, rate, size=looks))
        x_c = np.cumsum(rng.binomial(per_look, rate, size=looks))
        result = stats.sequential_two_proportions(x_t, n, x_c, n, alpha=alpha)
        assert (np.diff(result.p_values) <= 0).all()  # running minimum
        assert (np.diff(result.low) >= 0).all() and (np.diff(result.high) <= 0).all()  # intersected
        sequential += result.rejected(alpha)
        p_fixed = [
            stats.two_proportion_ztest(int(a), int(k), int(b), int(k))[1] for a, b, k in zip(x_t, x_c, n, strict=True)
        ]
        naive += min(p_fixed) < alpha
    assert sequential / n_runs <= alpha
    assert naive / n_runs > 2 * alpha


def test_the_sequential_test_detects_a_real_effect():
    n = np.arange(1, 31) * 400
    x_c = (n * 0.10).astype(int)
    x_t = (n * 0.13).astype(int)
    result = stats.sequential_two_proportions(x_t, n, x_c, n)
    assert result.p_value < 1e-4
    assert result.low[-1] <= 0.03 <= result.high[-1]


def test_cuped_known_answers():
    rng = np.random.default_rng(1)
    x_t, x_c = rng.normal(size=500), rng.normal(size=500)
    # Y = 2X exactly in both arms: θ = 2, and the adjusted difference is 0 with no variance left, although the
    # unadjusted difference of means is 2·(mean(X_t) - mean(X_c)) by chance
    exact = stats.cuped(2 * x_t, x_t, 2 * x_c, x_c)
    assert exact.theta == pytest.approx(2.0)
    assert exact.unadjusted.value == pytest.approx(2 * (x_t.mean() - x_c.mean()))
    assert exact.adjusted.value == pytest.approx(0.0, abs=1e-12)
    assert exact.adjusted.se < 1e-9
    assert exact.variance_reduction == pytest.approx(1.0)
    # With noise of the same variance as 2X: ρ² = 4/5 of the variance is explained
    y_t = 2 * x_t + rng.normal(scale=2, size=500) + 0.5
    y_c = 2 * x_c + rng.normal(scale=2, size=500)
    noisy = stats.cuped(y_t, x_t, y_c, x_c)
    assert noisy.variance_reduction == pytest.approx(0.5, abs=0.06)
    assert noisy.adjusted.se < noisy.unadjusted.se
    assert noisy.adjusted.low <= 0.5 <= noisy.adjusted.high
    assert stats.cuped(y_t, np.zeros(500), y_c, np.zeros(500)) is None  # no pre-period data


def test_looks_count_units_and_conversions_by_each_look():
    first = np.array([0.0, 1.0, 2.0, 0.5, 2.5])
    conv = np.array([0.5, np.nan, 3.0, 1.5, np.nan])
    treated = np.array([True, True, True, False, False])
    lk = stats.looks(first, conv, treated, [1.0, 2.0, 3.0])
    assert lk.n_t.tolist() == [2, 3, 3] and lk.x_t.tolist() == [1, 1, 2]
    assert lk.n_c.tolist() == [1, 1, 2] and lk.x_c.tolist() == [0, 1, 1]
    assert lk.fixed_horizon_p_values().shape == (3,)
    with pytest.raises(ValueError, match="increasing"):
        stats.looks(first, conv, treated, [2.0, 1.0])
