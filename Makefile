# order-policy: every target bootstraps what it needs (.venv, generated code) by itself.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BUNDLE ?= rules/cancellation
PROTOS := $(shell find protos -name '*.proto' 2>/dev/null)
GEN_STAMP := server/_gen/.stamp

.PHONY: all venv gen serve test test-fast check-bundles lint bench check image loadtest loadtest-ci goldens clean

all: test

$(VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.stamp

$(GEN_STAMP): $(VENV)/.stamp $(PROTOS)
	$(PY) -m server._gen
	touch $@

gen: $(GEN_STAMP)

serve: $(GEN_STAMP)
	$(VENV)/bin/order-policy serve --bundle $(BUNDLE)

check: $(GEN_STAMP)
	$(VENV)/bin/order-policy check $(BUNDLE)
	$(VENV)/bin/order-policy test $(BUNDLE)

# The whole suite, slow tests included (what CI runs), and every bundle under rules/
# checked and tested against its own cases.
test: $(GEN_STAMP) lint check-bundles
	$(PY) -m pytest

# The suite without the tests marked `slow` (memory over 10^6 decisions, real serve
# processes, ...): for a quick local run; `make test` stays the reference.
test-fast: $(GEN_STAMP) lint check-bundles
	$(PY) -m pytest -m "not slow and not load"

# `order-policy check` and `order-policy test` on every bundle a policy owner ships.
check-bundles: $(GEN_STAMP)
	@set -e; for bundle in rules/*/; do \
	  $(VENV)/bin/order-policy check "$${bundle%/}"; \
	  $(VENV)/bin/order-policy test "$${bundle%/}"; \
	done

lint: $(VENV)/.stamp
	$(VENV)/bin/ruff check server tests

bench: $(GEN_STAMP)
	$(PY) -m tests.bench.decide_bench --bundle $(BUNDLE)

# Rewrite the golden files of the fixture bundles (tests/fixtures/goldens) after a
# reviewed change to the compiler or to a fixture bundle.
goldens: $(GEN_STAMP)
	$(PY) -m pytest tests/test_compile.py -k golden --update-goldens -q

# The full load test (h2load against `serve`, 1 and 2 workers, echo baseline).
loadtest: $(GEN_STAMP)
	$(PY) -m tests.load

# The short load test CI runs (at most 3 minutes; fails on errors, never on speed).
loadtest-ci: $(GEN_STAMP)
	$(PY) -m tests.load --ci --json loadtest-results.json

# Build the container image with podman/buildah (needs root).
image:
	.ci/image-check --build-only

clean:
	rm -rf $(VENV) server/_gen/*_pb2*.py server/_gen/orderpolicy $(GEN_STAMP) .pytest_cache
