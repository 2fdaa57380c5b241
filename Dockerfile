# order-policy: the gRPC policy decision service.
#
# Two stages on the same Debian base, so the venv built in the first copies as-is into the
# second (same python3 3.11 at /usr/bin/python3):
#   builder  compiles durable_rules (no wheels: needs gcc and the Python headers), installs
#            the locked runtime dependencies into /opt/venv, builds the project's wheel (its
#            build hook generates the gRPC code from protos/) with the locked build tools, and
#            installs that wheel, which carries the default bundle, into /opt/venv
#   runtime  python3, the venv (without pip) and the default bundle; runs as uid 10001
#
#   docker build -t order-policy .
#   docker run --init -p 50051:50051 -p 9464:9464 order-policy
#
# Without a registry, build on a local base: --build-arg BASE_IMAGE=localhost/debian:bookworm
# (see .ci/image-check). A CA bundle passed as the build secret `hostca` is trusted by pip;
# it is only mounted for the steps that download, and nothing of it stays in the image.
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS builder
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc libc6-dev \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
RUN python3 -m venv /opt/venv && python3 -m venv /opt/build
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, from the lock files alone (hash-checked), so this slow layer
# (durable_rules compiles from source) is rebuilt only when a lock changes. On Python 3.13+
# durable_rules needs PyObject_CallObject in place of the removed PyEval_CallObject.
COPY requirements.lock requirements-build.lock ./
RUN --mount=type=secret,id=hostca,target=/run/host-ca/ca.crt \
    if [ -s /run/host-ca/ca.crt ]; then export PIP_CERT=/run/host-ca/ca.crt; fi \
 && if python3 -c 'import sys; sys.exit(sys.version_info < (3, 13))'; then \
      export CPPFLAGS="-DPyEval_CallObject=PyObject_CallObject"; fi \
 && /opt/venv/bin/pip install --require-hashes -r requirements.lock \
 && /opt/venv/bin/python -c 'import durable_rules_engine' \
 && /opt/build/bin/pip install --require-hashes -r requirements-build.lock

# The wheel: built without build isolation by the locked build tools, installed without
# dependencies (all in place from the lock; `pip check` fails the build when the lock lacks
# one: run `make lock`), checked from outside the source tree.
COPY . .
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /tmp/dist . \
 && /opt/venv/bin/pip install --no-deps /tmp/dist/*.whl \
 && /opt/venv/bin/pip check \
 && cd / \
 && python -c 'import server._gen.orderpolicy.v1.order_policy_pb2_grpc, server, server._jsonkeys; \
assert (server.default_bundle() / "manifest.yaml").is_file(), server.default_bundle()' \
 && python -m pip uninstall -y -q pip setuptools \
 && python -m compileall -q /opt/venv/lib \
 && rm -rf /opt/venv/share /tmp/dist

FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin app
COPY --from=builder /opt/venv /opt/venv
COPY rules /app/rules
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
USER 10001:10001
EXPOSE 50051 9464
# `order-policy health` exits 0 only while the gRPC health service says SERVING.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["order-policy", "health", "--address", "127.0.0.1:50051"]
# The server stops gracefully on SIGTERM (finishes in-flight calls, exits 0).
STOPSIGNAL SIGTERM
CMD ["order-policy", "serve", "--bundle", "/app/rules/cancellation", \
     "--host", "0.0.0.0", "--port", "50051", "--metrics-port", "9464"]
