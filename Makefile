# Every target works from a fresh clone with only Python 3.11+, pip and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
TESTING := $(VENV)/.installed-test

.PHONY: install run test test-quick lint bench bench-exchange bench-api check clean bench-feed loadtest chaos \
	bench-first-start

install: $(TESTING)

# `make run` installs only what running needs; `make test` (and everything that runs the suite or a benchmark)
# adds the test extras on top. pip is not upgraded: the one a venv brings installs this project, and upgrading
# it costs seconds of every first start. The install compiles the order book (setup.py), so a changed source of
# it must reinstall, or tests and benchmarks would run stale binaries.
$(INSTALLED): pyproject.toml setup.py $(wildcard matching/*.py matching/*.pxd)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e .
	touch $(INSTALLED)

# The test extra's requirements, read from pyproject.toml, without reinstalling (and recompiling) tokex itself.
$(TESTING): $(INSTALLED)
	$(BIN)/python -c "import tomllib; print('\\n'.join(tomllib.load(open('pyproject.toml', 'rb'))\
		['project']['optional-dependencies']['test']))" | $(BIN)/python -m pip install --quiet -r /dev/stdin
	touch $(TESTING)

# The demo keeps its embedded PostgreSQL and master key in TOKEX_HOME: ./var unless set.
TOKEX_HOME ?= $(CURDIR)/var

run: $(INSTALLED)
	TOKEX_HOME="$(TOKEX_HOME)" $(BIN)/tokex demo

lint: $(TESTING)
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest

# The quick loop while working: all but the drills, the load run, the fuzzers, the wheel install and the
# browser test (the `slow` marker). `make test` still runs everything.
test-quick: lint
	$(BIN)/python -m pytest -m "not slow"

bench: $(TESTING)
	$(BIN)/python -m loadtest.bench_matching

bench-exchange: $(TESTING)
	$(BIN)/python -m loadtest.bench_exchange

bench-api: $(TESTING)
	$(BIN)/python -m loadtest.bench_api

bench-feed: $(TESTING)
	$(BIN)/python -m loadtest.bench_feed

# The full load run and the fault drills (loadtest/README.md); matplotlib draws the load run's chart.
loadtest: $(TESTING)
	$(BIN)/python -m pip install --quiet -e '.[test,loadtest]'
	$(BIN)/python -m loadtest run

chaos: $(TESTING)
	$(BIN)/python -m loadtest chaos

check: $(INSTALLED)
	$(BIN)/tokex check

# Fresh clone of HEAD to the demo's first answer, as a newcomer runs it (loadtest/first_start.py).
bench-first-start:
	$(PYTHON) loadtest/first_start.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache build matching/*.so
