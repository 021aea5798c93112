"""vitrine evaluate personalisation on the tiny bundle: every section is measured and written (slow)."""

import json

import pytest

from engine.evaluation.personalisation import evaluate_personalisation, render


@pytest.mark.slow
def test_the_report_has_every_measurement_and_renders(demo_store, trained_artifacts, tmp_path):
    root, version = trained_artifacts
    report = evaluate_personalisation(
        demo_store, root, users=4, n=3, realism_weights=(0.0, 1.0), out=tmp_path / "p.json", show_progress=False
    )
    assert report["bundle"] == version
    pm = report["preference_maximisation"]
    assert set(pm["by_realism_weight"]) == {"0", "1"} and pm["images"] == 12
    h = report["hidden_taste_match"]
    assert 0.0 <= h["personalised"] <= 1.0 and h["users"] == 4
    g = report["held_out_purchases"]
    assert g["users"] >= 1 and 0.0 <= g["grounded"] <= 1.0 and g["split"]["test_days"] == 1
    assert json.loads((tmp_path / "p.json").read_text())["bundle"] == version
    assert "Hidden-taste match" in render(report)


def test_held_out_days_are_the_fewest_with_enough_known_buyers():
    import pandas as pd

    from engine.evaluation.personalisation import held_out_days

    day = pd.Timestamp("2026-01-10", tz="UTC")
    rows = [(u, day - pd.Timedelta(days=9), "view") for u in "abcdef"]  # everyone seen early on
    rows += [("a", day, "purchase"), ("new", day, "purchase"), ("b", day, "view")]  # last day: one known buyer
    rows += [("c", day - pd.Timedelta(days=1), "purchase"), ("d", day - pd.Timedelta(days=2), "purchase")]
    events = pd.DataFrame(rows, columns=["user_id", "timestamp", "event_type"])
    assert held_out_days(events, 1) == 1
    assert held_out_days(events, 2) == 2  # "new" was never seen before and "b" only viewed
    assert held_out_days(events, 3) == 3
    assert held_out_days(events, 50, max_days=5) == 5  # never enough: the cap
