# One entry point for people and CI. `make test` and `make demo` create the
# virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test lint bench demo quickstart clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip check
	touch $@

install: $(VENV)/.installed

# The demo needs only what it runs (the `demo` extra), not the development tools.
$(VENV)/.demo-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[demo]"
	$(PY) -m pip check
	touch $@

# The demo's end-to-end tests (a few minutes each, mostly waiting on the loop's own
# reactions) run in a second pytest process beside the rest of the suite, which
# roughly halves the wall time on two cores; the target fails if either fails.
E2E := tests/runtime/test_demo.py tests/runtime/test_demo_wine.py
test: install
	@$(PY) -m pytest $(E2E) > .pytest-e2e.log 2>&1 & e2e=$$!; \
	$(PY) -m pytest $(addprefix --ignore=,$(E2E)); rest=$$?; \
	wait $$e2e; demo=$$?; \
	echo "--- the demo's end-to-end tests (run beside the rest) ---"; cat .pytest-e2e.log; \
	rm -f .pytest-e2e.log; test $$rest -eq 0 && test $$demo -eq 0

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

demo: $(VENV)/.demo-installed
	$(VENV)/bin/scanflow demo

quickstart: install
	$(VENV)/bin/scanflow run examples/quickstart.py --embedded-nats

bench: install
	$(PY) bench/core.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
