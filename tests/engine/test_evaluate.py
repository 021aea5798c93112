"""`vitrine evaluate` on a small bundle: every section, baselines beside the model, a JSON report and a PNG."""

import json

from PIL import Image

from engine.evaluation.bundle import evaluate_bundle
from engine.evaluation.generation import evaluate_generation


def test_evaluation_report_has_every_section_with_baselines(trained_artifacts, demo_store, tmp_path):
    root, version = trained_artifacts
    report = evaluate_bundle(demo_store, root, out_dir=tmp_path, users=20, show_progress=False)
    data = json.loads(report.json_path.read_text())
    assert data["bundle"] == version
    k = data["ranking"]["k"]
    for model in ("popularity", "als", "ranker"):  # the ranker: what serving ranks with
        for group in ("warm", "all"):
            m = data["ranking"]["results"][model][group]
            assert 0.0 <= m[f"recall@{k}"] <= 1.0 and 0.0 <= m[f"ndcg@{k}"] <= 1.0
    gen = data["generation"]["generated"]
    assert gen["images"] > 0 and gen["chance_class"] == 1 / 8
    fid = data["generation"]["fidelity"]
    assert fid["frechet_floor"] > 0 and fid["frechet_ratio"] == fid["frechet_distance"] / fid["frechet_floor"]
    assert {row["met"] for row in data["generation"]["demo_targets"]} <= {True, False}
    assert data["generation"]["generator"]["total_steps"] >= data["generation"]["generator"]["steps"] > 0
    # the tiny bundle is a cascade: its ceiling is judged on the classifier's own held-out images
    ceiling, on_real = data["generation"]["cascade_ceiling"], data["generation"]["classifier_on_real_holdout"]
    assert ceiling["as_they_are"] == {a: on_real[f"accuracy_{a}"] for a in ("class", "colour", "pattern")}
    assert set(ceiling["through_upscaler"]) == {"class", "colour", "pattern"}
    # `vitrine evaluate generation` measures the same served generator to the same figures
    alone, lines, _ = evaluate_generation(demo_store, root, out_dir=tmp_path / "alone", show_progress=False)
    assert alone["generated"] == gen and alone["fidelity"] == fid
    assert any("demo-store targets" in line for line in lines)
    pers = data["personalisation"]
    assert pers["users"] == 20
    for name in ("personalised", "popular", "random"):
        assert 0.0 <= pers[name]["judged_match"] <= 1.0
    # the random baseline requests each (top-2 class, top-2 colour) with probability about 4/80
    assert pers["random"]["requested_match"] < 0.2
    sheet = Image.open(report.contact_sheet_path)
    assert sheet.width == 8 * 64 * 2 and sheet.height == 8 * 64 * 2  # 8 classes × 8 samples, shown at 2×
    assert "Ranking" in report.render() and "Personalisation" in report.render()
