# pbkv developer commands. Every target creates .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
N ?= 2000
JOBS ?= 2

.PHONY: demo test check lint typecheck unit sweep bench clean venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)  ## run the scripted failure demo against a real local cluster
	$(BIN)/pbkv demo

test: check unit  ## lint, type-check and run the test suite (what CI runs)

check: lint typecheck

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m "not slow" tests

sweep: $(STAMP)  ## randomized simulation over N seeds: make sweep N=20000
	$(BIN)/pbkv sim --seeds $(N) --jobs $(JOBS)

bench: $(STAMP)  ## pbkv vs Redis side by side
	bash scripts/bench.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
