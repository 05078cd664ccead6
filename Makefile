# ironpost: two commands on a fresh machine.
#   make run   build the venv, install, start ironpost on its embedded default
#   make test  install what the tests need (Debian peers included), lint, type-check, test
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck unit integration bench bench-cluster deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/ironpost run

deps:
	bash scripts/install-test-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) deps lint typecheck
	$(BIN)/pytest -n 2 -q

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

# The side-by-side suite of issue #7 (S1-S6), then one table, the docs section and the chart.
bench: $(STAMP) deps
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python bench/accept.py --rounds 3
	$(BIN)/python bench/relay.py --rounds 3
	$(BIN)/python bench/size_mix.py
	$(BIN)/python bench/concurrency.py
	$(BIN)/python bench/queue_scale.py
	$(BIN)/python bench/auth_cost.py
	$(BIN)/python bench/report.py

# Issue #8: 1, 2 and 3 nodes on one PostgreSQL, and PostgreSQL's cost per message.
bench-cluster: $(STAMP) deps
	$(BIN)/python bench/cluster.py

clean:
	rm -rf $(VENV) build src/*.egg-info
