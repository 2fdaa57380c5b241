# order-policy: every target bootstraps what it needs (.venv, generated code) by itself.
# PYTHON may name any supported interpreter (3.11-3.13), e.g. `make PYTHON=python3.13 test`;
# .venv is made again when it was made with another version.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BUNDLE ?= rules/cancellation
PROTOS := $(shell find protos -name '*.proto' 2>/dev/null)
GEN_STAMP := server/_gen/.stamp
PYTHON_EXE := $(shell .ci/find-python $(PYTHON))
ifeq ($(PYTHON_EXE),)
$(error no working interpreter `$(PYTHON)`)
endif
PY_VERSION := $(shell $(PYTHON_EXE) -c 'import sys; print(*sys.version_info[:2], sep=".")')
ifneq ($(PY_VERSION),$(shell $(PY) -c 'import sys; print(*sys.version_info[:2], sep=".")' 2>/dev/null))
$(shell rm -f $(VENV)/.stamp)
VENV_CLEAR := --clear
endif
# durable_rules 2.0.28 calls PyEval_CallObject, which Python 3.13 removed from its C API: there
# it is built with PyObject_CallObject (same arguments) instead. Its setup.py overwrites CFLAGS,
# so CPPFLAGS is what reaches the compiler.
DURABLE_SHIM := $(if $(filter 3.11 3.12,$(PY_VERSION)),,-DPyEval_CallObject=PyObject_CallObject)

.PHONY: server-model FORCE all venv gen lock serve test test-core lint bench check image install-check loadtest loadtest-ci goldens \
	proto-image console test-browser browser-deps clients client-python client-typescript clean fuzz
.PHONY: test-fast check-bundles fmt

all: test

# Dependencies come from requirements-dev.lock (hash-checked); the project itself is installed
# editable without build isolation, so its build hook uses the locked grpcio-tools. When
# pyproject.toml changed since the last `make lock`, dependencies missing from the lock are
# installed unpinned and a warning says to run `make lock`. An existing .venv of the same
# Python is updated in place (a fresh clone, as in CI, gets exactly the lock).
$(VENV)/.stamp: pyproject.toml requirements-dev.lock
	$(PYTHON_EXE) -m venv $(VENV_CLEAR) $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	CPPFLAGS="$(DURABLE_SHIM) $$CPPFLAGS" $(PY) -m pip install --quiet --require-hashes -r requirements-dev.lock
	@# a durable_rules wheel built earlier without the shim may sit in pip's cache: build it again
	$(PY) -c 'import durable_rules_engine' 2>/dev/null || { \
	  awk '/^durable-rules==/{p=1} p{print} p&&!/\\$$/{exit}' requirements-dev.lock > $(VENV)/durable.txt && \
	  CPPFLAGS="$(DURABLE_SHIM) $$CPPFLAGS" $(PY) -m pip install --quiet --no-cache-dir --force-reinstall \
	    --no-deps --require-hashes -r $(VENV)/durable.txt && $(PY) -c 'import durable_rules_engine'; }
	if $(PY) .ci/lock --check; then \
	  $(PY) -m pip install --quiet --no-deps --no-build-isolation -e .; \
	else \
	  $(PY) -m pip install --quiet --no-build-isolation -e '.[dev]'; \
	fi
	touch $@

# The native duplicate-key scan server/_jsonkeys.c, compiled into server/ for this venv's Python
# (server/_jsonkeys.cpython-3XX-*.so, git-ignored): the editable install compiles it too, this
# compiles it again when the C file changes. `venv` and every target that needs the generated
# code get it.
NATIVE_STAMP := $(VENV)/.native-stamp

venv: $(VENV)/.stamp $(NATIVE_STAMP)

$(NATIVE_STAMP): $(VENV)/.stamp server/_jsonkeys.c hatch_build.py
	$(PY) hatch_build.py
	touch $@

$(GEN_STAMP): $(VENV)/.stamp $(PROTOS) $(NATIVE_STAMP)
	$(PY) -m server._gen
	touch $@

gen: $(GEN_STAMP)

# Pin every dependency (runtime, build tools, dev) with hashes after a change to pyproject.toml.
lock: $(VENV)/.stamp
	.ci/lock $(PY)

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
# browser download from elsewhere is never used) driven by Playwright, installed into the
# venv from requirements-browser.lock (the dev lock plus the `browser` extra).
BROWSER_STAMP := $(VENV)/.browser-stamp
$(BROWSER_STAMP): $(VENV)/.stamp requirements-browser.lock
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
	  || { echo "error: Debian's chromium is missing: apt-get install chromium" >&2; exit 1; }
	$(PY) -m pip install --quiet --require-hashes -r requirements-browser.lock
	touch $@

browser-deps: $(BROWSER_STAMP)

test-browser: $(GEN_STAMP) $(BROWSER_STAMP)
	$(PY) -m pytest -m browser tests/console

# The core and API tests (every test but the slow and load ones), nothing else: what .ci/run
# runs on each supported Python besides the one `make test` uses, each in its own venv
# (VENV=.venv-3.12 PYTHON=python3.12).
test-core: $(GEN_STAMP)
	$(PY) -m pytest -m "not slow and not load and not browser" -q

# ruff (rules and formatting), and mypy over server/ (strict for the core; the generated .pyi
# type the messages). `make fmt` applies ruff's fixes and formatting.
LINT_PATHS := server tests clients/python hatch_build.py
lint: $(GEN_STAMP)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy

fmt: $(VENV)/.stamp
	$(VENV)/bin/ruff check --fix $(LINT_PATHS)
	$(VENV)/bin/ruff format $(LINT_PATHS)

# The long fuzz run: only the `fuzz` tests, each with FUZZ_EXAMPLES hypothesis examples
# (make test runs them briefly).
fuzz: $(GEN_STAMP)
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-2000} $(PY) -m pytest -m fuzz -q

bench: $(GEN_STAMP)
	$(PY) -m tests.bench.decide_bench --bundle $(BUNDLE)

# Rewrite the golden files of the fixture bundles (tests/fixtures/goldens) after a
# reviewed change to the compiler or to a fixture bundle.
goldens: $(GEN_STAMP)
	$(PY) -m pytest tests/test_compile.py -k golden --update-goldens -q

# Build the sdist and wheel, install the wheel into a fresh venv and run it from elsewhere.
install-check: $(VENV)/.stamp
	PYTHON=$(PYTHON_EXE) .ci/install-check

# The full load test (h2load against `serve`, 1 and 2 workers, echo baseline).
loadtest: $(GEN_STAMP)
	$(PY) -m tests.load

# Threaded against asyncio gRPC server: the same echo on both, side by side (prints figures).
server-model: $(GEN_STAMP)
	$(PY) -m tests.load.server_model

# The short load test CI runs (at most 3 minutes; fails on errors, never on speed).
loadtest-ci: $(GEN_STAMP)
	$(PY) -m tests.load --ci --json loadtest-results.json

# The fleet rehearsal: three `serve` processes following one signed bundle URL under load
# (about 1.5 minutes; `make test` runs its short variant).
.PHONY: fleet
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
CLIENT_BUNDLE ?= tests/fixtures/bundles/cancellation-fixture
CLIENTS_BUILD := build/clients
CLIENT_ENV = ORDER_POLICY_COMMAND=$(abspath $(VENV))/bin/order-policy \
	ORDER_POLICY_TEST_BUNDLE=$(abspath $(CLIENT_BUNDLE)) ORDER_POLICY_TEST_CASES=$(abspath $(CLIENTS_BUILD))/cases.json

clients: client-python client-typescript

$(CLIENTS_BUILD)/cases.json: $(GEN_STAMP) FORCE
	$(PY) -m tests.clients.export_cases $(CLIENT_BUNDLE) $@

# Python: a wheel (code generated from protos/ at build time) into a new venv, mypy --strict
# over the installed package, then its tests (`-P`: the checkout is not on sys.path).
client-python: $(CLIENTS_BUILD)/cases.json
	rm -rf $(CLIENTS_BUILD)/python && mkdir -p $(CLIENTS_BUILD)/python
	$(PY) -m pip wheel --quiet --no-deps --no-build-isolation -w $(CLIENTS_BUILD)/python clients/python
	$(PYTHON_EXE) -m venv $(CLIENTS_BUILD)/python/venv
	$(CLIENTS_BUILD)/python/venv/bin/pip install --quiet $(CLIENTS_BUILD)/python/order_policy_client-*.whl pytest \
	  mypy types-grpcio types-protobuf
	cd $(CLIENTS_BUILD) && python/venv/bin/mypy --config-file $(abspath clients/python/pyproject.toml) -p order_policy_client
	$(CLIENT_ENV) $(CLIENTS_BUILD)/python/venv/bin/python -P -m pytest -c clients/python/pyproject.toml \
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
	rm -rf $(VENV) .venv-3.* server/_gen/*_pb2*.py server/_gen/orderpolicy $(GEN_STAMP) .pytest_cache \
	  server/_jsonkeys*.so
