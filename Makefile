# Vitrine: two commands on a fresh machine.
#   make demo   venv + install, generate the demo store, train everything, evaluate, serve on :8000
#   make test   venv + install, run the default test suite
#   make lint   venv + install, ruff (lint and format), the import contracts and mypy
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch lies on disk here; a bare `torch` would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
DEMO_DIR ?= data/demo
ARTIFACTS ?= data/artifacts
SEED ?= 0
HOST ?= 127.0.0.1
PORT ?= 8000
export OPENBLAS_NUM_THREADS := 1

.PHONY: demo test test-slow lint install serve evaluate bench-load clean

$(BIN)/vitrine: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or run: make PYTHON=python3 ...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e '.[dev]'
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

lint: $(BIN)/vitrine
	$(BIN)/ruff check engine features models api tests
	$(BIN)/ruff format --check engine features models api tests
	$(BIN)/lint-imports
	$(BIN)/mypy api models features engine/serving

clean:
	rm -rf $(DEMO_DIR) $(ARTIFACTS)
