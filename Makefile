# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv when missing
# and installs the package (idempotent: re-installs only when pyproject.toml changes).
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.drcl-installed
DEMO_DIR ?= work/demo

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/drcl demo --work-dir $(DEMO_DIR)

# The tests run one torch thread each (tests/conftest.py), so they run in parallel processes,
# one per core (at most 4), each test file in one process (module fixtures are made once).
# TEST_WORKERS=0 runs them in this process, one after the other.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)

test: $(STAMP)
	$(PY) -m pytest -q -x --durations=15 -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

# e.g. make bench BENCH_ARGS="--only throughput,lvis" (docs/performance.md)
bench: $(STAMP)
	$(PY) bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf work .pytest_cache
