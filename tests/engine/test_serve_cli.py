"""`vitrine serve`: what it tells an operator before it starts the server."""

from __future__ import annotations

import pytest

from engine.cli import main


@pytest.fixture
def started(monkeypatch, tmp_path):
    """Stub uvicorn.run and record its arguments; keep the environment the CLI writes to."""
    import uvicorn

    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append({"app": app, **kw}))
    monkeypatch.setenv("VITRINE_ARTIFACTS", str(tmp_path))
    monkeypatch.delenv("VITRINE_REDIS_URL", raising=False)
    return calls


def test_several_workers_without_redis_are_warned(started, tmp_path, capsys):
    assert main(["serve", "--artifacts", str(tmp_path), "--workers", "2"]) == 0
    err = capsys.readouterr().err
    assert "2 workers without VITRINE_REDIS_URL" in err
    assert started and started[0]["workers"] == 2


def test_one_worker_or_redis_needs_no_warning(started, tmp_path, capsys, monkeypatch):
    assert main(["serve", "--artifacts", str(tmp_path)]) == 0
    assert "VITRINE_REDIS_URL" not in capsys.readouterr().err
    monkeypatch.setenv("VITRINE_REDIS_URL", "redis://127.0.0.1:6379/0")
    assert main(["serve", "--artifacts", str(tmp_path), "--workers", "3"]) == 0
    assert "VITRINE_REDIS_URL" not in capsys.readouterr().err
    assert [c["workers"] for c in started] == [1, 3]
