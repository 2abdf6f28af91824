# One entry point for people and CI. `make test` and `make demo` create the
# virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test test-quick test-suite test-e2e lint docs bench demo quickstart image-lock clean

# uv installs what pip would, from the same index, in seconds instead of a minute
# and a half; pip checks the result. Bytecode is compiled at install, as pip does:
# without it the first test processes, all at once, each compiled MLflow's imports
# (seen: the suite took 517 s instead of 314, and three tests ran out of time).
UV := $(VENV)/bin/uv pip install --python $(PY) -q --compile-bytecode

$(VENV)/bin/uv:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv

$(VENV)/.installed: pyproject.toml $(VENV)/bin/uv
	$(UV) -e ".[dev]"
	$(PY) -m pip check
	touch $@

install: $(VENV)/.installed

# The demo needs only what it runs (the `demo` extra), not the development tools.
$(VENV)/.demo-installed: pyproject.toml $(VENV)/bin/uv
	$(UV) -e ".[demo]"
	$(PY) -m pip check
	touch $@

# The tests run on xdist workers, each with its own servers (docs/guides/testing.md).
# `make test` runs everything CI runs: the suite, then the heavy end-to-end
# tests (marked e2e) on their own. `make test-quick` is the edit loop: the suite
# without the tests that start servers and agent processes (marked slow, e2e).
# Four workers on two cores: most tests wait on servers and processes (the
# figures are in docs/guides/testing.md). The end-to-end loops are CPU-bound:
# two at a time (with three, one loop's calm phase once found no CPU to scale in),
# dealt out longest first (tests/conftest.py) rather than stolen from each other's
# end, which left one worker running a two-minute test alone.
WORKERS ?= 4
E2E_WORKERS ?= 2
PYTEST := $(PY) -m pytest --dist worksteal --durations=15

test: test-suite test-e2e

test-suite: install
	$(PYTEST) -n $(WORKERS) -m "not e2e"

test-e2e: install
	$(PYTEST) -n $(E2E_WORKERS) -m e2e --dist load

test-quick: install
	$(PYTEST) -n $(WORKERS) -m "not e2e and not slow"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

demo: $(VENV)/.demo-installed
	$(VENV)/bin/scanflow demo

# The documentation site, into site/ (strict: a broken link or a warning fails it).
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

quickstart: install
	$(VENV)/bin/scanflow run examples/quickstart.py --embedded-nats

# The images' dependencies, pinned with hashes for every platform (each image
# installs its lock before the code, in a layer of its own): the agent image's
# (MLflow's client only) and the serving image's (model servers, training
# steps, images built on the cluster). Run after a change to pyproject's
# dependencies; tests/helm/test_image.py says when it is due.
AGENT_EXTRAS := tracking kubernetes drift pod fast
SERVING_EXTRAS := serving kubernetes drift pod fast
LOCK := $(VENV)/bin/uv pip compile pyproject.toml --universal --python-version 3.11 \
	--generate-hashes --no-header -q
image-lock: install
	$(LOCK) $(AGENT_EXTRAS:%=--extra %) -o requirements-agent.txt
	$(LOCK) $(SERVING_EXTRAS:%=--extra %) -o requirements-serving.txt

bench: install
	$(PY) bench/core.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site
