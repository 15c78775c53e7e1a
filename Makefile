# Every target works from a fresh clone with only Python 3.11+, pip and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
TESTING := $(VENV)/.installed-test
COMPILED := $(VENV)/.compiled

.PHONY: install compile run test test-quick lint bench bench-exchange bench-api check clean bench-feed loadtest \
	chaos bench-first-start bench-inference bench-cluster chaos-cluster drill-hosts

install: $(TESTING)

# `$(call INSTALL,ARGS)` installs into the venv with uv, which installs what pip would in a fraction of its time
# (loadtest/README.md, first start); the machine's own pip installs wherever uv could not be installed or fails.
INSTALL = if test -x $(BIN)/uv && $(BIN)/uv pip install --quiet --python $(BIN)/python $(1); then :; \
	else $(PYTHON) -m pip --python $(BIN)/python install --quiet $(1); fi
# The requirements that pyproject.toml lists at `$(call LISTED,['table']['key'])`, as arguments of INSTALL.
LISTED = $(BIN)/python -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))$(1)))"

# `make run` installs only what running needs, and tokex with the order book as plain Python: compiling it is most
# of a first install, and the demo's few actions a second do not need its speed. The venv has no pip of its own
# (seeding one costs seconds): the machine's pip installs uv into it, and uv the rest.
$(INSTALLED): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv --without-pip $(VENV)
	test -x $(BIN)/uv || $(PYTHON) -m pip --python $(BIN)/python install --quiet uv \
		|| echo "tokex: uv could not be installed; pip installs instead"
	export TOKEX_PURE_PYTHON=1; $(call INSTALL,-e .)
	touch $(INSTALLED)

# The compiled order book (setup.py), built in place beside its sources, for everything that tests or measures it.
# All three are rebuilt (--force) whenever a source of any changed, so tests and benchmarks never run a stale binary
# (tests/matching/test_compiled.py); once they exist, `make run` keeps them current too, as Python imports them
# before the .py.
$(COMPILED): $(INSTALLED) $(wildcard matching/*.py matching/*.pxd)
	$(call INSTALL,$$($(call LISTED,['build-system']['requires'])))
	$(BIN)/python setup.py --quiet build_ext --inplace --force
	touch $(COMPILED)

compile: $(COMPILED)

# The test extra's requirements, and the pip that tests call as `python -m pip`.
$(TESTING): $(COMPILED)
	$(call INSTALL,pip $$($(call LISTED,['project']['optional-dependencies']['test'])))
	touch $(TESTING)

# The demo keeps its embedded PostgreSQL and master key in TOKEX_HOME: ./var unless set.
TOKEX_HOME ?= $(CURDIR)/var

run: $(INSTALLED) $(if $(wildcard matching/*.so),$(COMPILED))
	TOKEX_HOME="$(TOKEX_HOME)" $(BIN)/tokex demo

lint: $(TESTING)
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest

# The quick loop while working: all but the drills, the load run, the fuzzers, the wheel install and the
# browser test (the `slow` marker). `make test` still runs everything, one test at a time. The quick loop runs on
# every core (pytest-xdist, at most 4 workers), a test file to a worker so that a module's shared server starts
# once: most of its time is spent waiting on servers, not computing. Each worker has its own embedded PostgreSQL
# (or clones the shared template on TOKEX_TEST_DATABASE_URL's server); every server, port and TOKEX_HOME a test
# starts is its own.
test-quick: lint
	$(BIN)/python -m pytest -m "not slow" -n auto --maxprocesses 4 --dist loadfile

# Each benchmark and drill below is `python -m MODULE` in the test venv, MODULE set per target.
bench: MODULE = loadtest.bench_matching
bench-exchange: MODULE = loadtest.bench_exchange
bench-api: MODULE = loadtest.bench_api
bench-feed: MODULE = loadtest.bench_feed
# Inference calls through the gateway against a fast simulated provider (loadtest/bench_inference.py).
bench-inference: MODULE = loadtest.bench_inference
# The fault drills (loadtest/README.md).
chaos: MODULE = loadtest chaos
# The cluster against one process, the engine through NATS, 5,000 watchers over 2 gateways (docs/cluster.md).
bench-cluster: MODULE = loadtest.bench_cluster
# The leader SIGKILLed 10 times, a gateway SIGKILLed and NATS restarted, under load.
chaos-cluster: MODULE = loadtest.chaos_cluster
# NATS, PostgreSQL, the engines and the gateways in network namespaces of their own (as root; else it skips).
drill-hosts: MODULE = loadtest.hosts

bench bench-exchange bench-api bench-feed bench-inference chaos bench-cluster chaos-cluster drill-hosts: $(TESTING)
	$(BIN)/python -m $(MODULE)

# The full load run (loadtest/README.md); matplotlib draws its chart.
loadtest: $(TESTING)
	$(BIN)/python -m pip install --quiet -e '.[test,loadtest]'
	$(BIN)/python -m loadtest run

check: $(INSTALLED)
	$(BIN)/tokex check

# Fresh clone of HEAD to the demo's first answer, as a newcomer runs it (loadtest/first_start.py).
bench-first-start:
	$(PYTHON) loadtest/first_start.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache build matching/*.so
