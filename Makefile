# The project's interface: CI calls these targets only.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTO_SRC := proto
PROTO_OUT := libs
PROTO_FILES := $(shell find $(PROTO_SRC) -name '*.proto')

.DEFAULT_GOAL := help
.PHONY: help install proto proto-check fmt lint test test-scale-out run bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml sdks/python/pyproject.toml
	sh scripts/system_packages.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet -e sdks/python
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the project with its dev tools

proto: $(STAMP) ## Regenerate the gRPC stubs from proto/
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m grpc_tools.protoc -I $(PROTO_SRC) \
		--python_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) \
		--mypy_out=$(PROTO_OUT) --mypy_grpc_out=$(PROTO_OUT) $(PROTO_FILES)

proto-check: $(STAMP) ## Fail when the committed stubs differ from what proto/ generates
	$(BIN)/python scripts/proto_check.py

fmt: $(STAMP) ## Format and autofix
	$(BIN)/ruff format libs/sinas_common libs/sinas_devstack services tests scripts bench sdks/python examples
	$(BIN)/ruff check --fix libs/sinas_common libs/sinas_devstack services tests scripts bench sdks/python examples

lint: $(STAMP) ## ruff and mypy --strict
	$(BIN)/ruff check libs/sinas_common libs/sinas_devstack services tests scripts bench sdks/python examples
	$(BIN)/ruff format --check libs/sinas_common libs/sinas_devstack services tests scripts bench sdks/python examples
	$(BIN)/mypy libs/sinas_common libs/sinas_devstack services/scheduler/sinas_scheduler services/executor/sinas_executor services/gateway/sinas_gateway services/notifier/sinas_notifier
	cd sdks/python && $(abspath $(BIN))/mypy sinas

test: $(STAMP) ## Install what is needed and run the whole suite (starts its own servers)
	$(MAKE) --no-print-directory proto-check
	$(BIN)/pytest $(PYTEST_ARGS)

test-scale-out: $(STAMP) ## Only the multi-replica chaos test (part of `test` too): 3-node NATS, kills
	$(BIN)/pytest -m scale_out tests/e2e/test_scale_out.py $(PYTEST_ARGS)

run: $(STAMP) ## Start the whole system (embedded PostgreSQL and NATS unless configured)
	$(BIN)/python -m sinas_devstack

bench: $(STAMP) ## Us, the floor of our shape, Celery, arq, procrastinate; writes bench/results (not part of test)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean: ## Remove the virtual environment and local data
	rm -rf $(VENV) .sinas
