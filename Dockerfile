# order-policy: the gRPC policy decision service.
#
# Two stages on the same Debian base, so the venv built in the first copies as-is into the
# second (same python3 3.11 at /usr/bin/python3):
#   builder  compiles durable_rules (no wheels: needs gcc and the Python headers),
#            generates the gRPC code from protos/ and installs the project into /opt/venv
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
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, from pyproject.toml alone, so this slow layer (durable_rules compiles
# from source) is rebuilt only when the dependencies change. The code generator's tools
# (grpcio-tools from the dev extra) are resolved together with the runtime packages, so the
# generated code matches the protobuf runtime, and removed again after generating.
COPY pyproject.toml ./
RUN python3 -c 'import re, tomllib; \
p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
dev = p.get("optional-dependencies", {}).get("dev", []); \
tools = [d for d in dev if re.match(r"(grpcio-tools|mypy-protobuf)\b", d)]; \
names = [re.match(r"[A-Za-z0-9._-]+", d).group(0) for d in tools]; \
open("/tmp/requirements.txt", "w").write("\n".join(p["dependencies"] + tools) + "\n"); \
open("/tmp/build-tools.txt", "w").write("\n".join(names) + "\n")'
RUN --mount=type=secret,id=hostca,target=/run/host-ca/ca.crt \
    if [ -s /run/host-ca/ca.crt ]; then export PIP_CERT=/run/host-ca/ca.crt; fi \
 && pip install -r /tmp/requirements.txt \
 && python -c 'import durable_rules_engine'

# The generated code is not in git: produce it from protos/ before installing, so the
# installed package (non-editable, self-contained) carries server/_gen.
COPY . .
RUN --mount=type=secret,id=hostca,target=/run/host-ca/ca.crt \
    if [ -s /run/host-ca/ca.crt ]; then export PIP_CERT=/run/host-ca/ca.crt; fi \
 && python -m server._gen \
 && pip uninstall -y -q -r /tmp/build-tools.txt \
 && pip install . \
 && cd / \
 && python -c 'import server._gen.orderpolicy.v1.order_policy_pb2_grpc' \
 && python -m pip uninstall -y -q pip setuptools \
 && python -m compileall -q /opt/venv/lib \
 && rm -rf /opt/venv/share


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
