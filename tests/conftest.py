"""Shared test options and fixtures.

Layout: the tests mirror ``server/`` (``tests/test_engine.py`` tests ``server/engine.py``,
``tests/api/`` tests ``server/api/``, ``tests/cli/`` the commands of ``server/cli/``);
shared builders live in ``tests/support/`` and fixture bundles and goldens in
``tests/fixtures/``. Engineering tests run on the fixture bundle, never on ``rules/``.
"""

from __future__ import annotations

import importlib.util
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.bundles import FIXTURE_BUNDLE, ROOT, copy_bundle

GEN = ROOT / "server" / "_gen"

# Bootstrap: the generated code is git-ignored and produced by `make gen`; generate it
# when missing so a bare `pytest` works. A stale copy is left alone on purpose:
# test_generated_code_is_fresh reports it.
if not (GEN / "orderpolicy" / "v1" / "order_policy_pb2.py").exists():
    from server._gen.__main__ import generate

    generate(GEN)

# The same for the native duplicate-key scan (the editable install and make compile it): compiled
# when missing or older than server/_jsonkeys.c, before anything imports server.facts, so a bare
# `pytest` tests the current C code (tests/test_jsonkeys.py fails when it does not compile).
_NATIVE = ROOT / "server" / f"_jsonkeys{sysconfig.get_config_var('EXT_SUFFIX')}"
if not _NATIVE.exists() or _NATIVE.stat().st_mtime < (ROOT / "server" / "_jsonkeys.c").stat().st_mtime:
    _spec = importlib.util.spec_from_file_location("_order_policy_hatch_build", ROOT / "hatch_build.py")
    assert _spec is not None
    assert _spec.loader is not None
    _hook = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_hook)
    _hook.build_native(ROOT, ROOT / "server")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-goldens", action="store_true", help="rewrite golden files instead of comparing")


@pytest.fixture
def update_goldens(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-goldens"))


@pytest.fixture(scope="session")
def fixture_bundle() -> Path:
    """The fixture bundle (a frozen copy of the default policy): read-only."""
    return FIXTURE_BUNDLE


@pytest.fixture
def bundle_copy(tmp_path: Path) -> Iterator[Path]:
    """A private copy of the fixture bundle that a test may edit."""
    return copy_bundle(tmp_path / "bundle")


# -- the gRPC server on the fixture bundle (API and command tests) ------------------


@pytest.fixture(scope="session")
def bundle_dir() -> Path:
    return FIXTURE_BUNDLE


@pytest.fixture(scope="session")
def policy(bundle_dir: Path):
    """The fixture bundle compiled in this process, to compare the server against."""
    from server.registry import Registry

    return Registry().load(bundle_dir)


@pytest.fixture(scope="session")
def server_address(bundle_dir: Path) -> Iterator[str]:
    """One in-process server on the fixture bundle, shared by the read-only tests."""
    from tests.support.servers import running_server

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
