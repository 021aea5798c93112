"""The report: counts attributed by unit and time window, figures equal to the statistics, SRM, CUPED, chart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from engine.experiments import (
    Experiment,
    ExperimentRegistry,
    UnknownExperiment,
    Variant,
    chart_png,
    experiment_report,
    render_report,
    stats,
    write_chart,
)
from engine.experiments.eventstore import Event, EventStore, ExposureIn

START = datetime(2024, 5, 1, tzinfo=UTC)
DAY = 86_400.0
T0 = START.timestamp()


def purchase(cid: str, unit: str, ts: float, revenue: float = 20.0) -> Event:
    return Event(client_event_id=cid, kind="purchase", ts=ts, user_id=unit, item_id="i", revenue=revenue)


@pytest.fixture
def store():
    """Control: 200 units, 20 convert; treatment: 200 units, 40 convert (known counts, fixed assignment)."""
    with EventStore("sqlite://") as s:
        exp = Experiment(
            name="known",
            start=START,
            stop=START + timedelta(days=10),
            variants=(Variant(name="control", strategy="popular"), Variant(name="treatment")),
        )
        ExperimentRegistry(s).create(exp)
        for arm, converting in (("control", 20), ("treatment", 40)):
            units = [f"{arm}-{i}" for i in range(200)]
            exposures = [ExposureIn(unit_id=u, ts=T0 + (i % 5) * DAY + 60, user_id=u) for i, u in enumerate(units)]
            s.record_exposures("known", exposures, lambda u, arm=arm: arm)
            events = [purchase(f"{u}-buy", u, T0 + (i % 5) * DAY + 120) for i, u in enumerate(units[:converting])]
            # never counted: a purchase before the unit's exposure, and one after the report's as_of
            events.append(purchase(f"{arm}-early", units[-1], T0 + 30))
            events.append(purchase(f"{arm}-late", units[-2], T0 + 9 * DAY))
            s.add_events(events)
        yield s


def test_counts_and_figures_match_the_statistics(store):
    report = experiment_report(store, "known", as_of=START + timedelta(days=8))
    control, treatment = report["variants"]
    assert (control["exposures"], control["conversions"]) == (200, 20)
    assert (treatment["exposures"], treatment["conversions"]) == (200, 40)
    assert treatment["conversion_rate"] == 0.2
    assert treatment["revenue"] == 40 * 20.0
    assert treatment["revenue_per_exposure"] == pytest.approx(4.0)
    comp = report["comparisons"][0]
    assert (comp["variant"], comp["control"]) == ("treatment", "control")
    newcombe = stats.newcombe_diff(40, 200, 20, 200)
    assert comp["absolute_lift"] == pytest.approx(0.1)
    assert comp["absolute_lift_ci"] == pytest.approx([newcombe.low, newcombe.high])
    rel = stats.relative_lift(40, 200, 20, 200)
    assert comp["relative_lift"] == pytest.approx(1.0)
    assert comp["relative_lift_ci"] == pytest.approx([rel.low, rel.high])
    assert comp["p_value"] == pytest.approx(stats.two_proportion_ztest(40, 200, 20, 200)[1])
    assert comp["significant"]
    assert comp["sequential"]["looks"] == 8
    assert 0 < comp["sequential"]["always_valid_p_value"] <= 1
    assert comp["cuped"] is None  # no pre-period purchases
    assert not report["srm"]["alarm"]
    assert len(report["daily"]) == 8
    assert report["daily"][-1]["treatment"] == {"exposures": 200, "conversions": 40, "conversion_rate": 0.2}
    assert report["daily"][0]["control"]["exposures"] == 40  # units exposed on day 0 only


def test_the_report_as_of_an_earlier_time_sees_less(store):
    early = experiment_report(store, "known", as_of=START + timedelta(days=1))
    assert [v["exposures"] for v in early["variants"]] == [40, 40]
    late = experiment_report(store, "known", as_of=START + timedelta(days=30))  # capped at the stop
    assert late["as_of"] == "2024-05-11T00:00:00Z"
    assert late["variants"][1]["conversions"] == 41  # now the late purchase counts


def test_a_skewed_split_raises_the_srm_alarm(store):
    extra = [ExposureIn(unit_id=f"extra-{i}", ts=T0 + 100, user_id=f"extra-{i}") for i in range(120)]
    store.record_exposures("known", extra, lambda u: "treatment")
    report = experiment_report(store, "known", as_of=START + timedelta(days=8))
    assert report["srm"]["alarm"]
    assert any("sample ratio mismatch" in w for w in report["warnings"])
    assert "SRM ALARM" in render_report(report)


def test_cuped_appears_with_pre_period_data(store):
    # units that will convert also bought in the pre-period: a covariate correlated with the outcome
    pre = [
        purchase(f"pre-{arm}-{i}", f"{arm}-{i}", T0 - 3 * DAY) for arm in ("control", "treatment") for i in range(30)
    ]
    store.add_events(pre)
    comp = experiment_report(store, "known", as_of=START + timedelta(days=8))["comparisons"][0]
    assert comp["cuped"] is not None
    assert comp["cuped"]["variance_reduction"] > 0.1
    assert comp["cuped"]["absolute_lift_ci"][0] <= comp["absolute_lift"] <= comp["cuped"]["absolute_lift_ci"][1]


def test_text_and_chart(store, tmp_path):
    report = experiment_report(store, "known", as_of=START + timedelta(days=8))
    text = render_report(report)
    assert "treatment vs control" in text and "absolute lift   +10.00 pp" in text and "always-valid" in text
    png = chart_png(report)
    assert png.startswith(b"\x89PNG")
    assert write_chart(report, tmp_path / "c" / "chart.png").read_bytes() == png


def test_an_empty_experiment_reports_without_errors():
    with EventStore("sqlite://") as s:
        ExperimentRegistry(s).create(
            Experiment(
                name="empty",
                start=START,
                stop=START + timedelta(days=3),
                variants=(Variant(name="a"), Variant(name="b")),
            )
        )
        report = experiment_report(s, "empty", as_of=START - timedelta(days=1))
        assert report["variants"][0]["exposures"] == 0 and report["daily"] == []
        assert report["comparisons"][0]["absolute_lift"] is None
        assert "n/a" in render_report(report)
        assert chart_png(report).startswith(b"\x89PNG")
        with pytest.raises(UnknownExperiment):
            experiment_report(s, "missing")
