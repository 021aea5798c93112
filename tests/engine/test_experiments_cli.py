"""`vitrine experiments …`: thin wrappers over the engine functions, sharing the store with the API."""

from __future__ import annotations

import json

from engine.cli import main

CONFIG = {
    "name": "cli-exp",
    "start": "2024-05-01T00:00:00Z",
    "stop": "2024-05-08T00:00:00Z",
    "variants": [{"name": "control", "strategy": "popular"}, {"name": "treatment"}],
}


def test_create_list_report(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/events.db"
    config = tmp_path / "exp.json"
    config.write_text(json.dumps(CONFIG))
    assert main(["experiments", "create", "--config", str(config), "--database-url", url]) == 0
    assert main(["experiments", "create", "--config", str(config), "--database-url", url]) == 2  # exists
    assert main(["experiments", "list", "--database-url", url]) == 0
    assert "cli-exp  user" in capsys.readouterr().out
    chart = tmp_path / "chart.png"
    args = ["experiments", "report", "cli-exp", "--as-of", "2024-05-04T00:00:00+00:00", "--chart", str(chart)]
    assert main([*args, "--database-url", url]) == 0
    out = capsys.readouterr().out
    assert "treatment vs control" in out and chart.read_bytes().startswith(b"\x89PNG")
    assert main(["experiments", "report", "missing", "--database-url", url]) == 2


def test_a_bad_config_is_refused(tmp_path):
    config = tmp_path / "exp.json"
    config.write_text(json.dumps({**CONFIG, "trafic": 1}))
    assert main(["experiments", "create", "--config", str(config), "--database-url", f"sqlite:///{tmp_path}/e.db"]) == 2


def test_simulate_prints_its_checks(capsys):
    code = main(["experiments", "simulate", "aa", "--runs", "2", "--shoppers", "200", "--days", "2", "--no-progress"])
    out = capsys.readouterr().out
    assert code in (0, 1) and "A/A simulation: 2 experiments" in out and "overall:" in out
