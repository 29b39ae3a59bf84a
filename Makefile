# pbkv developer commands. Every target creates .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
N ?= 2000
JOBS ?= 2
FUZZ_SECONDS ?= 600

.PHONY: demo test check lint typecheck unit sweep fuzz hostile bench clean venv

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

fuzz: $(STAMP)  ## fuzz the wire decoder and every core handler: make fuzz FUZZ_SECONDS=600
	PBKV_FUZZ_SECONDS=$(FUZZ_SECONDS) $(BIN)/python -m pytest -q -s -p no:cacheprovider --timeout 0 tests/fuzz

hostile: $(STAMP)  ## the "Under hostile load" figures of docs/performance.md (about 5 minutes)
	$(BIN)/python scripts/measure_hostile.py

bench: $(STAMP)  ## pbkv vs Redis side by side
	bash scripts/bench.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
