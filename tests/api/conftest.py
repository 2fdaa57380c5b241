"""Fixtures of the gRPC API tests: generated code, the default bundle, a shared server."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GEN = REPO / "server" / "_gen"

# Bootstrap: the generated code is git-ignored and produced by `make gen`; generate it
# when missing so a bare `pytest` works. A stale copy is left alone on purpose:
# test_generated_code_is_fresh reports it.
if not (GEN / "orderpolicy" / "v1" / "order_policy_pb2.py").exists():
    from server._gen.__main__ import generate

    generate(GEN)

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def bundle_dir() -> Path:
    return REPO / "rules" / "cancellation"


@pytest.fixture(scope="session")
def policy(bundle_dir: Path):  # noqa: ANN201 (the core's Decider)
    """The default bundle compiled in this process, to compare the server against."""
    from server.registry import Registry

    return Registry().load(bundle_dir)


@pytest.fixture(scope="session")
def server_address(bundle_dir: Path) -> Iterator[str]:
    """One in-process server on the default bundle, shared by the read-only tests."""
    from server.testing import running_server

    with running_server(bundle_dir) as address:
        yield address


@pytest.fixture(scope="session")
def channel(server_address: str) -> Iterator[object]:
    import grpc

    with grpc.insecure_channel(server_address) as ch:
        yield ch


@pytest.fixture(scope="session")
def stub(channel: object) -> object:
    from server._gen.orderpolicy.v1 import order_policy_pb2_grpc as pb_grpc

    return pb_grpc.OrderPolicyServiceStub(channel)
