# order-policy: every target bootstraps what it needs (.venv, generated code) by itself.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BUNDLE ?= rules/cancellation
PROTOS := $(shell find protos -name '*.proto' 2>/dev/null)
GEN_STAMP := server/_gen/.stamp

.PHONY: all venv gen serve test lint bench check image loadtest loadtest-ci goldens proto-image clean

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

test: $(GEN_STAMP) lint
	$(PY) -m pytest

lint: $(VENV)/.stamp
	$(VENV)/bin/ruff check server tests

bench: $(GEN_STAMP)
	$(PY) -m tests.bench.decide_bench --bundle $(BUNDLE)

# Rewrite the golden files (compiled rulesets) after a reviewed change.
goldens: $(GEN_STAMP)
	$(PY) -m pytest tests/core/test_compile.py --update-goldens -q

# The full load test (h2load against `serve`, 1 and 2 workers, echo baseline).
loadtest: $(GEN_STAMP)
	$(PY) -m tests.load

# The short load test CI runs (at most 3 minutes; fails on errors, never on speed).
loadtest-ci: $(GEN_STAMP)
	$(PY) -m tests.load --ci --json loadtest-results.json

BUF := tools/buf/node_modules/.bin/buf

$(BUF): tools/buf/package-lock.json
	cd tools/buf && npm ci --no-audit --no-fund
	touch $@

# Record the released proto contract that `buf breaking` (in `make test`) checks against.
proto-image: $(BUF)
	cd protos && ../$(BUF) build --exclude-source-info -o released-image.json

# Build the container image with podman/buildah (needs root).
image:
	.ci/image-check --build-only

clean:
	rm -rf $(VENV) server/_gen/*_pb2*.py server/_gen/orderpolicy $(GEN_STAMP) .pytest_cache
