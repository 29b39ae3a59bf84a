# pbkv developer commands. Every target creates .venv when it is missing. `make demo` installs
# only what pbkv itself needs; the targets for developers add the dev tools ('.[dev]').
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed-dev
N ?= 2000
JOBS ?= 2
FUZZ_SECONDS ?= 600
# Test workers: three on two cores, since most test time is waiting on real processes (one run
# on the 2-core Intel host, 2026-12-02: 6:34 with 3, 7:49 with 2; 1064 s of tests either way).
# On a slower day (2026-12-03) 4 workers took 8:56, 3 took 8:02, and 7:01 once tests/conftest.py
# byte-compiled pbkv for the processes the suite starts (12.3 -> 9.8 minutes of CPU).
TEST_WORKERS ?= 3

.PHONY: demo dashboard test check lint typecheck unit browser etcd openssl test-pythons etcd-audit sweep fuzz hostile bench tls-bench clean venv compiled test-compiled bench-compiled

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUN_STAMP)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP) $(RUN_STAMP)

venv: $(STAMP)

# Byte-compiled once here: with PYTHONDONTWRITEBYTECODE set, every process the demo starts would
# otherwise compile pbkv from source again (0.3 s of CPU each; tests/conftest.py does the same).
PYC := $(BIN)/python -m compileall -q src >/dev/null

demo: $(RUN_STAMP)  ## run the scripted failure demo against a real local cluster
	$(PYC)
	$(BIN)/pbkv demo

dashboard: $(RUN_STAMP)  ## a local cluster and its live web dashboard (stop: .venv/bin/pbkv cluster down)
	$(PYC)
	$(BIN)/pbkv cluster up --dashboard

test: check unit  ## lint, type-check and run the test suite (what CI runs)

check: lint typecheck

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

typecheck: $(STAMP)
	$(BIN)/mypy

browser:  ## Debian's chromium, for the dashboard's browser test
	bash scripts/ensure_chromium.sh

etcd:  ## Debian's etcd, for the view service replicated on etcd (tests start their own)
	bash scripts/ensure_etcd.sh

openssl:  ## the openssl command, for the test of the guide's certificate recipe
	command -v openssl >/dev/null || (apt-get install -y openssl >/dev/null || (apt-get update >/dev/null && apt-get install -y openssl >/dev/null))

unit: $(STAMP) browser etcd openssl
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m "not slow" tests

sweep: $(STAMP)  ## randomized simulation over N seeds: make sweep N=20000
	$(BIN)/pbkv sim --seeds $(N) --jobs $(JOBS)

fuzz: $(STAMP)  ## fuzz the wire decoder and every core handler: make fuzz FUZZ_SECONDS=600
	PBKV_FUZZ_SECONDS=$(FUZZ_SECONDS) $(BIN)/python -m pytest -q -s -p no:cacheprovider --timeout 0 tests/fuzz

AUDIT_MINUTES ?= 10
etcd-audit: $(STAMP) etcd  ## kill the leader view service every 20 s under load, audit views: make etcd-audit AUDIT_MINUTES=10
	$(BIN)/python scripts/etcd_audit.py --minutes $(AUDIT_MINUTES)

hostile: $(STAMP)  ## the "Under hostile load" figures of docs/performance.md (about 5 minutes)
	$(BIN)/python scripts/measure_hostile.py

bench: $(STAMP)  ## pbkv vs Redis side by side
	bash scripts/bench.sh

tls-bench: $(STAMP)  ## the cost of authentication and TLS, pbkv and Redis (median of 3 runs a cell, about 3 minutes)
	command -v redis-server >/dev/null || (apt-get install -y redis-server >/dev/null || (apt-get update >/dev/null && apt-get install -y redis-server >/dev/null))
	$(BIN)/python scripts/measure_tls.py

# The compiled build (setup.py): the request path compiled to C by mypyc, in its own venv so that
# editing the source never runs stale compiled code in .venv. Rebuilt when any source changes.
CVENV := .venv-compiled
CSTAMP := $(CVENV)/.installed-compiled
$(CSTAMP): pyproject.toml setup.py $(shell find src -name '*.py')
	test -x $(CVENV)/bin/python || $(PYTHON) -m venv $(CVENV)
	touch $(CSTAMP).building  # the build's start: a source edited while it runs is newer, so rebuilt next time
	$(CVENV)/bin/python -m pip install --quiet --upgrade pip setuptools wheel
	$(CVENV)/bin/python -m pip install --quiet '.[dev]'
	PBKV_COMPILE=1 $(CVENV)/bin/python -m pip install --quiet --no-build-isolation --no-deps --force-reinstall .
	rm -rf build
	$(CVENV)/bin/python -c "import pbkv.build as b; assert b.compiled(), 'not compiled'; print('pbkv:', b.describe())"
	mv $(CSTAMP).building $(CSTAMP)

compiled: $(CSTAMP)  ## build .venv-compiled: pbkv with its request path compiled by mypyc (about 3 minutes)

test-pythons: browser etcd openssl  ## the suite under Python 3.12 and 3.13 too (each in .venv-pyX.Y): make test-pythons [PYTHONS="..."]
	bash scripts/test_pythons.sh

test-compiled: $(CSTAMP) browser etcd openssl  ## the test suite against the compiled build
	$(CVENV)/bin/python -m pytest -q -n $(TEST_WORKERS) -m "not slow" -p no:cacheprovider tests

bench-compiled: $(CSTAMP)  ## make bench with the compiled build (records its own sections)
	PYTHON=$(CVENV)/bin/python bash scripts/bench.sh

clean:
	rm -rf $(VENV) $(CVENV) .venv-py3.* .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
