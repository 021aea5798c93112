# Vitrine: two commands on a fresh machine.
#   make demo   venv + install, generate the demo store, train everything, evaluate, serve on :8000
#   make test   venv + install, run the default test suite
#   make lint   venv + install, ruff (lint and format), the import contracts and mypy
#   make lock   refresh requirements.lock from pyproject.toml (exact versions and hashes; see README)
#   make audit  the locked versions against the known vulnerabilities (pip-audit; .ci/audit.py)
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch lies on disk here; a bare `torch` would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
TORCH_WHEELS ?= /opt/wheels
# Every other dependency, at the exact version and file hashes that the tests ran with.
LOCK ?= requirements.lock
LOCK_FLAGS ?=
DEMO_DIR ?= data/demo
ARTIFACTS ?= data/artifacts
SEED ?= 0
HOST ?= 127.0.0.1
PORT ?= 8000
export OPENBLAS_NUM_THREADS := 1

.PHONY: demo test test-slow lint lock audit install serve evaluate bench-load clean

# The lock first (pip and setuptools included; hashes checked, nothing resolved), then torch, whose dependencies
# the lock already holds, then the project itself without resolving anything; pip check fails when pyproject.toml
# asks for a package the lock lacks.
$(BIN)/vitrine: pyproject.toml $(LOCK)
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or run: make PYTHON=python3 ...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	@$(BIN)/pip check || { echo "$(LOCK) does not hold what pyproject.toml asks for: run make lock"; exit 1; }
	@touch $@

install: $(BIN)/vitrine

$(DEMO_DIR)/store.json: | $(BIN)/vitrine
	$(BIN)/vitrine data demo --out $(DEMO_DIR) --seed $(SEED)

$(ARTIFACTS)/CURRENT: $(DEMO_DIR)/store.json
	$(BIN)/vitrine train --data $(DEMO_DIR) --artifacts $(ARTIFACTS) --preset demo --seed $(SEED) --promote

evaluate: $(ARTIFACTS)/CURRENT
	$(BIN)/vitrine evaluate --data $(DEMO_DIR) --artifacts $(ARTIFACTS)

demo: evaluate
	$(BIN)/vitrine serve --artifacts $(ARTIFACTS) --host $(HOST) --port $(PORT) --demo $(DEMO_DIR)

serve: $(ARTIFACTS)/CURRENT
	$(BIN)/vitrine serve --artifacts $(ARTIFACTS) --host $(HOST) --port $(PORT)

bench-load: $(ARTIFACTS)/CURRENT
	$(BIN)/vitrine bench load --artifacts $(ARTIFACTS)

test: $(BIN)/vitrine
	$(BIN)/python -m pytest

test-slow: $(BIN)/vitrine
	$(BIN)/python -m pytest -m slow

# Resolve pyproject.toml's dependencies (with the dev extra) for this venv's Python and platform, keeping the pins
# the lock has unless LOCK_FLAGS says otherwise: LOCK_FLAGS=--upgrade (everything to the newest allowed) or
# LOCK_FLAGS='--upgrade-package NAME'. torch stays out of the lock: TORCH_SPEC pins it (its CPU build is not on
# PyPI), and it is resolved as that build so that the lock holds its dependencies and no CUDA packages.
lock:
	@test -x $(BIN)/uv || { $(PYTHON) -m venv $(VENV) && $(BIN)/pip install --quiet uv; }
	echo "$(TORCH_SPEC)" > $(VENV)/torch-constraint.txt
	$(BIN)/uv pip compile --quiet pyproject.toml --extra dev --generate-hashes --python $(BIN)/python \
		--no-emit-package torch --constraint $(VENV)/torch-constraint.txt \
		$(if $(wildcard $(TORCH_WHEELS)),--find-links $(TORCH_WHEELS)) \
		--custom-compile-command "make lock" --output-file $(LOCK) $(LOCK_FLAGS)

audit: $(BIN)/vitrine
	$(BIN)/python .ci/audit.py $(LOCK) "$(TORCH_SPEC)"

lint: $(BIN)/vitrine
	$(BIN)/ruff check engine features models api tests
	$(BIN)/ruff format --check engine features models api tests
	$(BIN)/lint-imports
	$(BIN)/mypy api models features engine/serving engine/batch

clean:
	rm -rf $(DEMO_DIR) $(ARTIFACTS)
