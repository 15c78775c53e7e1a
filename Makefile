# Every target works from a fresh clone with only Python 3.11+, pip and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: install run test test-quick lint bench bench-exchange bench-api check clean bench-feed loadtest chaos

install: $(INSTALLED)

# The install compiles the order book (setup.py), so a changed source of it must reinstall, or tests and
# benchmarks would run stale binaries.
$(INSTALLED): pyproject.toml setup.py $(wildcard matching/*.py matching/*.pxd)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(INSTALLED)

# The demo keeps its embedded PostgreSQL and master key in TOKEX_HOME: ./var unless set.
TOKEX_HOME ?= $(CURDIR)/var

run: $(INSTALLED)
	TOKEX_HOME="$(TOKEX_HOME)" $(BIN)/tokex demo

lint: $(INSTALLED)
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest

# The quick loop while working: all but the drills, the load run, the fuzzers, the wheel install and the
# browser test (the `slow` marker). `make test` still runs everything.
test-quick: lint
	$(BIN)/python -m pytest -m "not slow"

bench: $(INSTALLED)
	$(BIN)/python -m loadtest.bench_matching

bench-exchange: $(INSTALLED)
	$(BIN)/python -m loadtest.bench_exchange

bench-api: $(INSTALLED)
	$(BIN)/python -m loadtest.bench_api

bench-feed: $(INSTALLED)
	$(BIN)/python -m loadtest.bench_feed

# The full load run and the fault drills (loadtest/README.md); matplotlib draws the load run's chart.
loadtest: $(INSTALLED)
	$(BIN)/python -m pip install --quiet -e '.[test,loadtest]'
	$(BIN)/python -m loadtest run

chaos: $(INSTALLED)
	$(BIN)/python -m loadtest chaos

check: $(INSTALLED)
	$(BIN)/tokex check

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache build matching/*.so
