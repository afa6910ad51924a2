# Developer entry points; each is a script in scripts/, so that `make X`, tests/test_code_quality.py
# and CI (.ci/run -> ./scripts/test.sh) run the same commands.
.PHONY: all lint format types coverage test bench services

all: lint types coverage

lint:
	./scripts/lint.sh

format:
	.venv/bin/python -m ruff check --fix src tests benchmarks examples
	.venv/bin/python -m ruff format src tests benchmarks examples

types:
	./scripts/types.sh

coverage:
	./scripts/coverage.sh

# The whole suite (lint, types and coverage included, through tests/test_code_quality.py);
# `make test ARGS="tests/unit -q"` for one tier.
test:
	./scripts/test.sh $(ARGS)

# `make bench ARGS="webhook_latency --runs 50"`; `make bench ARGS=list` for the list.
bench:
	./scripts/bench.sh $(ARGS)

services:
	./scripts/services.sh start
