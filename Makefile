# Developer shortcuts; each target is one of the commands in README.md or .ci/run.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv demo demo-once test test-fast lint types bench clean

venv:
	$(PY) -m venv $(VENV) && $(BIN)/pip install -q -e '.[dev]'

demo: venv
	$(BIN)/openami demo

demo-once: venv
	$(BIN)/openami demo --once

test: venv
	$(BIN)/python -m pytest

test-fast: venv
	$(BIN)/python -m pytest -m "not slow and not postgres and not nats"

lint: venv
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

types: venv
	$(BIN)/mypy

bench: venv
	$(BIN)/openami bench ingest --rows 1000000 --json

clean:
	rm -rf $(VENV) var build dist .pytest_cache .mypy_cache .ruff_cache
