# vroegsignaal: `make help` lists the targets. Needs only Python 3.11+ and make; everything else
# (uv, the .venv, the locked dependencies) is installed on first use.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PG_SERVER_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/postgres
export UV_PYTHON_DOWNLOADS := never

.PHONY: help install demo test test-postgres run lint format lock clean bench bench-smoke

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(UV):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11 or newer is needed (PYTHON=$(PYTHON))"; exit 1; }
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(STAMP): requirements.lock pyproject.toml | $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(VENV)
	$(UV) pip sync --quiet --python $(BIN)/python --require-hashes requirements.lock
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $@

install: $(STAMP) ## Install uv, the .venv and the locked dependencies

demo: install ## Run two monthly cycles on the embedded SQLite default and show the result
	$(BIN)/vroegsignaal demo

test: install ## Run the tests (SQLite; also PostgreSQL when VS_TEST_DATABASE_URL is set or CI=true)
	@if [ "$${CI:-}" = "true" ] && [ -z "$${VS_TEST_DATABASE_URL:-}" ]; then \
		echo "CI=true: using PostgreSQL at $(PG_SERVER_URL)"; fi
	@if [ "$${CI:-}" = "true" ]; then \
		VS_TEST_DATABASE_URL="$${VS_TEST_DATABASE_URL:-$(PG_SERVER_URL)}" $(BIN)/pytest; \
	else \
		$(BIN)/pytest; \
	fi

test-postgres: install ## Run the tests on SQLite and on the local PostgreSQL server
	VS_TEST_DATABASE_URL="$${VS_TEST_DATABASE_URL:-$(PG_SERVER_URL)}" $(BIN)/pytest

run: install ## Serve the API on 127.0.0.1:8000 and the SFTP drop on 127.0.0.1:2222 (migrates first)
	$(BIN)/vroegsignaal db upgrade
	@$(BIN)/vroegsignaal sftp --host 127.0.0.1 --port 2222 & sftp_pid=$$!; \
		trap 'kill $$sftp_pid 2>/dev/null' EXIT INT TERM; \
		$(BIN)/vroegsignaal serve --host 127.0.0.1 --port 8000

bench: install ## Benchmarks at national scale on the local PostgreSQL (1M rows; minutes)
	$(BIN)/python -m bench.run --scale full --server-url "$(PG_SERVER_URL)" $(BENCH_ARGS)

bench-smoke: install ## The benchmark harness at 10,000 rows (about a minute)
	$(BIN)/python -m bench.run --scale smoke --server-url "$(PG_SERVER_URL)"

lint: install ## ruff (lint and format check) and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install ## Format the code with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lock: | $(UV) ## Re-resolve requirements.lock (with dev tools) and requirements-runtime.lock
	$(UV) pip compile pyproject.toml --group dev --generate-hashes --universal \
		--python-version 3.11 -o requirements.lock --quiet
	$(UV) pip compile pyproject.toml --generate-hashes --universal \
		--python-version 3.11 -o requirements-runtime.lock --quiet

clean: ## Remove the .venv, the tools and local data
	rm -rf $(VENV) $(TOOLS) data .pytest_cache .mypy_cache .ruff_cache
