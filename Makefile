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
endif
# durable_rules 2.0.28 calls PyEval_CallObject, which Python 3.13 removed from its C API: there
# it is built with PyObject_CallObject (same arguments) instead. Its setup.py overwrites CFLAGS,
# so CPPFLAGS is what reaches the compiler.
DURABLE_SHIM := $(if $(filter 3.11 3.12,$(PY_VERSION)),,-DPyEval_CallObject=PyObject_CallObject)

.PHONY: all venv gen lock serve test test-core lint bench check image install-check loadtest loadtest-ci goldens clean

all: test

# Dependencies come from requirements-dev.lock (hash-checked); the project itself is installed
# editable without build isolation, so its build hook uses the locked grpcio-tools. When
# pyproject.toml changed since the last `make lock`, dependencies missing from the lock are
# installed unpinned and a warning says to run `make lock`.
$(VENV)/.stamp: pyproject.toml requirements-dev.lock
	$(PYTHON_EXE) -m venv --clear $(VENV)
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

venv: $(VENV)/.stamp

$(GEN_STAMP): $(VENV)/.stamp $(PROTOS)
	$(PY) -m server._gen
	touch $@

gen: $(GEN_STAMP)

# Pin every dependency (runtime, build tools, dev) with hashes after a change to pyproject.toml.
lock: $(VENV)/.stamp
	.ci/lock $(PY)

serve: $(GEN_STAMP)
	$(VENV)/bin/order-policy serve --bundle $(BUNDLE)

check: $(GEN_STAMP)
	$(VENV)/bin/order-policy check $(BUNDLE)
	$(VENV)/bin/order-policy test $(BUNDLE)

test: $(GEN_STAMP) lint
	$(PY) -m pytest

# The core and API tests without the slow and load ones: what .ci/run runs on each supported
# Python besides the one `make test` uses, each in its own venv (VENV=.venv-3.12 PYTHON=python3.12).
CORE_TESTS ?= tests/core tests/api
test-core: $(GEN_STAMP)
	$(PY) -m pytest $(CORE_TESTS) -m "not slow and not load" -q

# ruff, and mypy over server/ (strict for the core; the generated .pyi type the messages).
lint: $(GEN_STAMP)
	$(VENV)/bin/ruff check server tests
	$(VENV)/bin/mypy

bench: $(GEN_STAMP)
	$(PY) -m tests.bench.decide_bench --bundle $(BUNDLE)

# Rewrite the golden files (compiled rulesets) after a reviewed change.
goldens: $(GEN_STAMP)
	$(PY) -m pytest tests/core/test_compile.py --update-goldens -q

# Build the sdist and wheel, install the wheel into a fresh venv and run it from elsewhere.
install-check: $(VENV)/.stamp
	PYTHON=$(PYTHON_EXE) .ci/install-check

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
	rm -rf $(VENV) .venv-3.* server/_gen/*_pb2*.py server/_gen/orderpolicy $(GEN_STAMP) .pytest_cache
