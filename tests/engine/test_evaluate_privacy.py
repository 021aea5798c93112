"""``vitrine evaluate privacy`` and ``vitrine evaluate private-als``: reports with their baselines and budgets."""

import argparse
import json
import math

import pytest

from engine.cli.evaluate import _epsilons
from engine.evaluation.private_als import evaluate_private_als, render


def test_budgets_parse_with_inf_for_the_non_private_baseline():
    assert _epsilons("1,4,8,inf") == (1.0, 4.0, 8.0, math.inf)
    for bad in ("0,1", "one", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            _epsilons(bad)


def test_the_private_als_report_sets_each_budget_beside_als_and_popularity(demo_store, tmp_path):
    out = tmp_path / "als.json"
    report = evaluate_private_als(
        demo_store, epsilons=(1.0,), test_days=7, factors=8, iterations=2, top_items=200, out=out, show_progress=False
    )
    names = list(report["results"])
    assert names[:3] == ["popularity", "popularity (last 1 days)", "als (8 factors)"]
    private = {n: r["privacy"] for n, r in report["results"].items() if n.startswith("private")}
    spent = sorted((p["epsilon"] is None, p["epsilon"]) for p in private.values())
    assert len(private) == 2 and spent[0][1] == pytest.approx(1.0, rel=0.01) and spent[1] == (True, None)
    assert all(p["items_with_factors"] <= 200 for p in private.values())
    assert json.loads(out.read_text())["anchor"].startswith("private ALS")
    text = render(report)
    assert "vs ALS" in text and "Anchor" in text


@pytest.mark.slow
def test_the_privacy_report_measures_every_budget_on_the_demo_store(demo_store, tmp_path):
    from engine.evaluation.privacy import evaluate_privacy
    from engine.evaluation.privacy import render as render_privacy

    report = evaluate_privacy(
        "demo",
        demo_store,
        epsilons=(4.0, math.inf),
        steps=4,
        batch_size=8,
        width=8,
        samples=40,
        judge_epochs=1,
        visual_steps=20,
        visual_batch_size=32,
        out=tmp_path / "privacy.json",
        show_progress=False,
    )
    gan, visual = report["gan"], report["visual"]
    assert [r["privacy"]["private"] for r in gan] == [True, False]
    assert 0 < gan[0]["privacy"]["epsilon"] <= 4.0 and gan[1]["privacy"]["epsilon"] is None
    assert all(0 <= r["class_accuracy"] <= 1 and r["frechet_distance"] >= 0 for r in gan)
    assert visual[0]["privacy"]["unit"] == "shopper" and 0 < visual[0]["auc"] < 1
    assert "Anchors" in render_privacy(report)


def test_the_privacy_report_refuses_parts_it_cannot_measure(tmp_path):
    from engine.evaluation.privacy import evaluate_privacy

    with pytest.raises(ValueError, match="no shopper logs"):
        evaluate_privacy("fashion_mnist", tmp_path, parts=("visual",))
    with pytest.raises(ValueError, match="parts must be"):
        evaluate_privacy("demo", tmp_path, parts=("vae",))
    with pytest.raises(ValueError, match="epsilons must be positive"):
        evaluate_privacy("demo", tmp_path, epsilons=(0.0,))
