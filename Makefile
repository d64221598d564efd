# All set-up happens here, so a fresh clone needs nothing but Python 3.11+, Java 17 and Maven.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install lint typecheck test test-unit test-kafka kafka-up kafka-down demo bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check pipeline tests bench
	$(BIN)/ruff format --check pipeline tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

## The README's test command: lint, types, unit and property tests, then the real-broker tests.
test: lint typecheck
	$(BIN)/python -m pytest -q

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q -m "not kafka"

kafka-up: $(STAMP)
	$(BIN)/python -m pipeline.kafka.local up

kafka-down: $(STAMP)
	$(BIN)/python -m pipeline.kafka.local down

## The README's main command: the whole pipeline on a local broker, with a summary and a picture.
## `SESSIONIZE_BOOTSTRAP=host:port make demo` runs it on that broker instead.
demo: $(STAMP)
	$(BIN)/sessionize demo --output-dir demo-out

bench: $(STAMP)
	$(BIN)/python bench/bench_offline.py

clean:
	rm -rf $(VENV) .kafka demo-out .pytest_cache .mypy_cache .ruff_cache
