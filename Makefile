# order-policy: every target bootstraps what it needs (.venv, generated code) by itself.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BUNDLE ?= rules/cancellation
PROTOS := $(shell find protos -name '*.proto' 2>/dev/null)
GEN_STAMP := server/_gen/.stamp

.PHONY: FORCE all venv gen serve console test test-browser browser-deps lint bench check image loadtest loadtest-ci goldens proto-image clients client-python client-typescript clean
.PHONY: test-fast check-bundles

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

console: $(GEN_STAMP)
	$(VENV)/bin/order-policy console --bundle $(BUNDLE)

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
	$(PY) -m pytest -m "not slow and not load and not browser"

# `order-policy check` and `order-policy test` on every bundle a policy owner ships.
check-bundles: $(GEN_STAMP)
	@set -e; for bundle in rules/*/; do \
	  $(VENV)/bin/order-policy check "$${bundle%/}"; \
	  $(VENV)/bin/order-policy test "$${bundle%/}"; \
	done

# The console's browser tests: Debian's chromium (installed with apt-get when missing; a
# browser download from elsewhere is never used) driven by Playwright from the venv.
BROWSER_STAMP := $(VENV)/.browser-stamp
$(BROWSER_STAMP): $(VENV)/.stamp
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
	  || { echo "error: Debian's chromium is missing: apt-get install chromium" >&2; exit 1; }
	$(PY) -m pip install --quiet -e '.[dev,browser]'
	touch $@

browser-deps: $(BROWSER_STAMP)

test-browser: $(GEN_STAMP) $(BROWSER_STAMP)
	$(PY) -m pytest -m browser tests/console

lint: $(VENV)/.stamp
	$(VENV)/bin/ruff check server tests clients/python

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
