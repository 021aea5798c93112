"""The import direction api → engine → {models, features} (contracts in pyproject.toml), checked by import-linter."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 7 kept, 0 broken" in result.stdout


def test_nothing_heavy_happens_at_import_time():
    """Importing the API reads no settings and loads no bundle: only create_app() and its lifespan do."""
    code = (
        "import api.app\n"
        "from api.settings import get_settings\n"
        "assert get_settings.cache_info().currsize == 0, 'settings were read at import time'\n"
        "import engine.serving.service, engine.artifacts.bundle\n"
        "print('ok')\n"
    )
    # An invalid setting would make Settings() raise: proof that importing never builds it.
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"VITRINE_MAX_SET_SIZE": "not-a-number", "PATH": "/usr/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
