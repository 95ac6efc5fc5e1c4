# The two commands of the README: `make demo` and `make test`.  Both build .venv first,
# from nothing but python3, and reuse it while pyproject.toml is unchanged.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TYPED  := sdk/runlog $(wildcard integrations/*/)

.PHONY: demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy --strict $(TYPED)

unit: $(STAMP)
	$(BIN)/pytest

# The benchmarks' own contenders (the bench extra); `make test` never needs them.
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

# Every script in turn, then one table of the headline rows they recorded.
bench: $(BENCH_STAMP)
	summary=$$(mktemp) && export RUNLOG_BENCH_SUMMARY=$$summary && \
	for script in benchmarks/bench_*.py; do $(BIN)/python $$script || exit 1; done && \
	$(BIN)/python benchmarks/summary.py $$summary && rm -f $$summary

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
