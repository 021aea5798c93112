"""The shape of the house: import contracts (pyproject.toml, checked by import-linter), the one place that names
the app factory, and module and class sizes a reader can hold in their head."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 8 kept, 0 broken" in result.stdout


def test_only_the_cli_names_the_app_factory():
    """Servers start through `vitrine serve`; nothing else hard-codes where the app lives."""
    naming = sorted(
        str(path.relative_to(ROOT))
        for package in ("api", "engine", "models", "features")
        for path in (ROOT / package).rglob("*.py")
        if "api.app:create_app" in path.read_text()
    )
    assert naming and all(name.startswith("engine/cli/") for name in naming), naming


def _sources():
    for package in ("api", "engine", "models", "features"):
        yield from sorted((ROOT / package).rglob("*.py"))


def test_no_module_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in _sources() if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long


def test_no_class_over_300_lines():
    big = {
        f"{p.relative_to(ROOT)}:{node.name}": node.end_lineno - node.lineno + 1
        for p in _sources()
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 300
    }
    assert not big, big


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


def test_the_command_line_parser_imports_no_torch():
    """`vitrine --help` and every argument error answer at once: building the parser loads no model code."""
    heavy = "{'torch', 'faiss', 'lightgbm'}"
    code = f"import sys; from engine.cli import build_parser; build_parser(); print(sorted({heavy} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]", result.stdout
