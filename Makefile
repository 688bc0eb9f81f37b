# The two commands a new user needs: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/svcbridge.toml

.PHONY: run test lint bench install dev clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

dev: $(VENV)/.dev-installed

run: $(VENV)/.installed
	$(BIN)/svcbridge --config $(CONFIG) run

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check src plugins tests $(wildcard bench)
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q $(PYTEST_ARGS)

bench: $(VENV)/.dev-installed
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache

# The long kill -9 campaign (issue 12 item 3; a short version runs in `make test`); figures in
# tests/reliability/results/ and docs/reliability.md
.PHONY: chaos
chaos: $(VENV)/.dev-installed
	CHAOS_KILLS=$${CHAOS_KILLS:-60} CHAOS_MAILS=$${CHAOS_MAILS:-500} CHAOS_POINT_ROUNDS=$${CHAOS_POINT_ROUNDS:-3} \
	CHAOS_RESULTS=$${CHAOS_RESULTS:-tests/reliability/results/chaos-last.json} \
	$(BIN)/pytest -q -s -m chaos tests/reliability/test_chaos.py $(PYTEST_ARGS)

# The long fuzz campaign (issue 12 item 11; `make test` runs 50 examples per property): 5,000
# examples per property, failures kept in var/hypothesis and replayed first on the next run
.PHONY: fuzz
fuzz: $(VENV)/.dev-installed
	SVCBRIDGE_FUZZ_EXAMPLES=$${SVCBRIDGE_FUZZ_EXAMPLES:-5000} $(BIN)/pytest -q -m fuzz tests/test_fuzz.py tests/test_channels_fuzz.py $(PYTEST_ARGS)
