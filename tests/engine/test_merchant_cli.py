"""``vitrine tag`` and ``vitrine generate`` on a trained bundle."""

import csv
import json
import shutil

from PIL import Image

from engine.cli import main


def test_tag_writes_one_row_per_photo_of_the_folder(trained_artifacts, demo_store, tmp_path, capsys):
    root, _ = trained_artifacts
    photos = sorted((demo_store / "images").glob("*.png"))[:7]
    (tmp_path / "in").mkdir()
    for p in photos:
        shutil.copy(p, tmp_path / "in" / p.name)
    out = tmp_path / "tags.csv"
    code = main(["tag", "--in", str(tmp_path / "in"), "--out", str(out), "--artifacts", str(root), "--no-progress"])
    assert code == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["path"] for r in rows] == [p.name for p in photos]
    for r in rows:
        assert r["class"] and r["colour"] and r["pattern"] and not r["error"]
        assert len(r["colour_top"].split("|")) == 3
    assert "tagged 7 of 7 photos" in capsys.readouterr().out


def test_tag_refuses_a_folder_without_photos(trained_artifacts, tmp_path):
    assert (
        main(["tag", "--in", str(tmp_path), "--out", str(tmp_path / "t.csv"), "--artifacts", str(trained_artifacts[0])])
        == 2
    )


def test_generate_writes_the_images_and_the_answer(sparse_artifacts, tmp_path, capsys):
    root, version, missing = sparse_artifacts
    args = ["generate", "--artifacts", str(root), "--n", "2", "--seed", "3", "--out", str(tmp_path / "new")]
    args += ["--class", missing["class"], "--colour", missing["colour"], "--attribute", f"pattern={missing['pattern']}"]
    assert main(args) == 0
    answer = json.loads((tmp_path / "new" / "generate.json").read_text())
    assert answer["condition"] == missing and answer["in_catalogue"] is False and answer["bundle_version"] == version
    assert [img["file"] for img in answer["images"]] == ["0.png", "1.png"]
    assert Image.open(tmp_path / "new" / "0.png").size == (64, 64)
    assert "not in the catalogue" in capsys.readouterr().out
    assert main([*args, "--colour", "ultraviolet"]) == 2  # the last --colour counts: an unknown one
