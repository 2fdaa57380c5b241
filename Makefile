# order-policy: every target bootstraps what it needs (.venv, generated code) by itself.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BUNDLE ?= rules/cancellation
PROTOS := $(shell find protos -name '*.proto' 2>/dev/null)
GEN_STAMP := server/_gen/.stamp

.PHONY: FORCE all venv gen serve test lint bench check image loadtest loadtest-ci fleet goldens proto-image clients client-python client-typescript clean

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
	$(VENV)/bin/ruff check server tests clients/python

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

# The fleet rehearsal: three `serve` processes following one signed bundle URL under load
# (about 1.5 minutes; `make test` runs its short variant).
fleet: $(GEN_STAMP)
	$(PY) -m tests.fleet

BUF := tools/buf/node_modules/.bin/buf

$(BUF): tools/buf/package-lock.json
	cd tools/buf && npm ci --no-audit --no-fund
	touch $@

# Record the released proto contract that `buf breaking` (in `make test`) checks against.
proto-image: $(BUF)
	cd protos && ../$(BUF) build --exclude-source-info -o released-image.json

# The callers' kits, each installed on its own in a fresh environment and tested against the
# real server started from CLIENT_BUNDLE (its cases are the expectations).
CLIENT_BUNDLE ?= $(firstword $(wildcard tests/fixtures/bundles/cancellation-fixture) rules/cancellation)
CLIENTS_BUILD := build/clients
CLIENT_ENV = ORDER_POLICY_COMMAND=$(abspath $(VENV))/bin/order-policy \
	ORDER_POLICY_TEST_BUNDLE=$(abspath $(CLIENT_BUNDLE)) ORDER_POLICY_TEST_CASES=$(abspath $(CLIENTS_BUILD))/cases.json

clients: client-python client-typescript

$(CLIENTS_BUILD)/cases.json: $(GEN_STAMP) FORCE
	$(PY) -m tests.clients.export_cases $(CLIENT_BUNDLE) $@

# Python: a wheel (code generated from protos/ at build time) into a new venv, then its tests.
client-python: $(CLIENTS_BUILD)/cases.json
	rm -rf $(CLIENTS_BUILD)/python && mkdir -p $(CLIENTS_BUILD)/python
	$(PY) -m pip wheel --quiet --no-deps --no-build-isolation -w $(CLIENTS_BUILD)/python clients/python
	$(PYTHON) -m venv $(CLIENTS_BUILD)/python/venv
	$(CLIENTS_BUILD)/python/venv/bin/pip install --quiet $(CLIENTS_BUILD)/python/order_policy_client-*.whl pytest
	$(CLIENT_ENV) $(CLIENTS_BUILD)/python/venv/bin/python -m pytest -c clients/python/pyproject.toml \
	  --rootdir clients/python clients/python/tests -q

# TypeScript: `npm ci` in its folder (package-lock.json), generated types, tsc, node --test.
client-typescript: $(CLIENTS_BUILD)/cases.json
	cd clients/typescript && npm ci --no-audit --no-fund
	cd clients/typescript && $(CLIENT_ENV) npm test

FORCE:

# Build the container image with podman/buildah (needs root).
image:
	.ci/image-check --build-only

clean:
	rm -rf $(VENV) server/_gen/*_pb2*.py server/_gen/orderpolicy $(GEN_STAMP) .pytest_cache
