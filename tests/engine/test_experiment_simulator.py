"""The experiment simulator: responses rise with taste match, truth is known, runs go through the real store."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from engine.experiments import Experiment, ExperimentRegistry, Variant, experiment_report
from engine.experiments.eventstore import EventStore
from engine.experiments.shoppers import (
    SIM_START,
    ShopperResponse,
    Shown,
    make_shoppers,
    oracle_show,
    personal_conditions,
    popular_conditions,
    run_shoppers,
    set_match,
)
from engine.experiments.simulation import SimulationSettings, in_process_visit, simulate_aa, simulate_ab
from engine.world import draw_tastes


@pytest.fixture(scope="module")
def tastes():
    return draw_tastes(400, np.random.default_rng(3))


def test_conversion_rises_with_the_match():
    r = ShopperResponse()
    assert r.conversion_probability(0.0, 1.0) < r.conversion_probability(0.5, 1.0) < r.conversion_probability(1, 1)
    assert r.click_probability(1.0, 100.0) == 1.0
    with pytest.raises(ValueError):
        ShopperResponse(cart_given_click=1.5)


def test_personal_sets_suit_shoppers_better_than_popular_ones(tastes):
    popular = popular_conditions(tastes, 8)
    assert len({tuple(c.values()) for c in popular}) == 8
    personal = [set_match(t, personal_conditions(t, 8, seed=i)) for i, t in enumerate(tastes)]
    assert np.mean(personal) > 1.5 * np.mean([set_match(t, popular) for t in tastes])
    assert personal_conditions(tastes[0], 8, seed=5) == personal_conditions(tastes[0], 8, seed=5)


def test_shoppers_arrive_in_the_window_and_in_order(tastes):
    shoppers = make_shoppers(tastes, start=SIM_START, days=3, seed=1)
    times = [s.arrival_ts for s in shoppers]
    assert times == sorted(times)
    assert SIM_START.timestamp() <= times[0] and times[-1] < (SIM_START + timedelta(days=3)).timestamp()
    keyed = make_shoppers({"U1": tastes[0], "U2": tastes[1]}, start=SIM_START, days=1, seed=1)
    assert {s.unit_id for s in keyed} == {"U1", "U2"}


def test_an_ab_run_through_the_store_knows_its_truth(tastes):
    """The in-process path: assignment + exposures + events in the store; true rates from the counterfactual."""
    shoppers = make_shoppers(tastes, start=SIM_START, days=4, seed=2)
    exp = Experiment(
        name="t",
        start=SIM_START,
        stop=SIM_START + timedelta(days=4),
        variants=(Variant(name="control", strategy="popular"), Variant(name="treatment")),
    )
    with EventStore("sqlite://") as store:
        ExperimentRegistry(store).create(exp)
        show = oracle_show(shoppers, {"control": "popular", "treatment": "personalised"})
        kwargs = {"show": show, "variants": ("control", "treatment"), "start": SIM_START, "tag": "t"}
        outcome = run_shoppers(shoppers, visit=in_process_visit(store, exp, show), sink=store.add_events, **kwargs)
        assert outcome.true_rates["treatment"] > outcome.true_rates["control"] > 0
        absolute, relative = outcome.true_lift("treatment", "control")
        assert absolute > 0 and relative > 0
        assert sum(outcome.exposed.values()) == len(shoppers)
        events_before = store.count_events()
        report = experiment_report(store, "t", as_of=exp.stop)
        assert [v["exposures"] for v in report["variants"]] == [
            outcome.exposed["control"],
            outcome.exposed["treatment"],
        ]
        assert [v["conversions"] for v in report["variants"]] == [
            outcome.converted.get("control", 0),
            outcome.converted.get("treatment", 0),
        ]
        assert report["comparisons"][0]["cuped"] is not None  # pre-period purchases were sent
        # rerunning with the same tag resends the same event ids: nothing new is stored
        run_shoppers(shoppers, visit=in_process_visit(store, exp, show), sink=store.add_events, **kwargs)
        assert store.count_events() == events_before


def test_run_shoppers_takes_any_visit_and_sink(tastes):
    """The shape the HTTP-driven run uses: a visit that returns what a server showed, a sink that posts."""
    shoppers = make_shoppers(tastes[:50], start=SIM_START, days=2, seed=4)
    show = oracle_show(shoppers, {"a": "personalised"})
    sent = []

    def visit(batch):
        return [
            Shown(variant="a", conditions=show(s.unit_id, "a"), image_ids=[f"img{i}" for i in range(8)]) for s in batch
        ]

    outcome = run_shoppers(
        shoppers, visit=visit, sink=sent.extend, response=ShopperResponse(click_base=0.5), pre_period_days=0
    )
    assert outcome.exposed == {"a": 50}
    clicks = [e for e in sent if e.kind == "click"]
    assert clicks and all(e.image_id.startswith("img") for e in clicks)
    with pytest.raises(ValueError, match="visit returned"):
        run_shoppers(shoppers, visit=lambda batch: [], sink=sent.extend)


def test_small_calibration_runs_report_their_figures():
    aa = simulate_aa(SimulationSettings(runs=3, shoppers=300, days=3), show_progress=False)
    text = aa.render()
    assert "fixed-horizon" in text and "always-valid" in text and "check" in text
    assert len(aa.checks) == 2
    ab = simulate_ab(SimulationSettings(runs=2, shoppers=600, days=3), show_progress=False)
    assert "true conversion rates" in ab.render()
    assert ab.first_report is not None and ab.first_report["variants"][0]["name"] == "control"
