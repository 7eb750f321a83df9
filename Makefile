# Two commands on a fresh machine: `make demo` and `make test` (each creates .venv if missing).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WORKDIR ?= work/demo

.PHONY: help venv demo test lint bench clean

help:  ## list targets
	@grep -E '^[a-z]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is required (set PYTHON=/path/to/python3.11)"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)  ## create .venv and install cart_etl with dev extras (pinned by constraints.txt)

demo: $(STAMP)  ## build the reference cohort and run the pipeline (see README)
	$(BIN)/cart-etl demo --workdir $(WORKDIR)

test: $(STAMP)  ## run the test suite
	$(BIN)/python -m pytest -q

lint: $(STAMP)  ## ruff + mypy + import-linter (the stage layers)
	$(BIN)/lint-imports
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy src

bench: $(STAMP)  ## speed/memory benchmarks (prints a table; not part of the tests)
	$(BIN)/python benchmarks/bench_synth.py
	$(BIN)/python benchmarks/bench_validate.py
	$(BIN)/python benchmarks/bench_run.py
	$(BIN)/python benchmarks/bench_fhir.py

clean:  ## remove the venv and generated data
	rm -rf $(VENV) work benchmarks/out
