# churnwatch — `make help` lists the targets. Each creates .venv (python3 -m venv) on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_ARGS ?=
BENCH_ARGS ?=
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv kafka demo test lint typecheck test-unit test-integration test-faults audit bench clean

help: ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "churnwatch needs Python >= 3.11 (found $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

venv: $(STAMP) ## create .venv and install churnwatch with its dev tools

kafka: $(STAMP) ## fetch the embedded Apache Kafka from Maven Central (once; needs Java 17 + Maven)
	@$(BIN)/churnwatch broker --fetch-only

demo: kafka ## run the demo: embedded Kafka + worker + synthetic traffic + live summary
	$(BIN)/churnwatch demo $(DEMO_ARGS)

lint: $(STAMP) ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP) ## mypy (strict)
	$(BIN)/mypy

test-unit: $(STAMP) ## unit and property tests (no network)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-integration: kafka ## integration tests against a real embedded Kafka broker
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

test-faults: kafka ## fault tests: kill -9 workers, stop the broker, late events (figures: var/reliability)
	$(BIN)/pytest tests/fault $(PYTEST_ARGS)

test: lint typecheck kafka ## lint, types, unit and integration tests (CI also runs test-faults)
	$(BIN)/pytest tests/unit tests/integration $(PYTEST_ARGS)

audit: $(STAMP) ## pip-audit the installed dependencies (fails on findings, warns on an outage)
	$(BIN)/python .ci/audit.py

bench: kafka ## benchmark churnwatch against raw aiokafka and Quix Streams (BENCH_ARGS="--quick")
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

clean: ## remove the virtualenv and caches (not the Kafka jar cache in ~/.cache/churnwatch)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis var
