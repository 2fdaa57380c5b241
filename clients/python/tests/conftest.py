"""Fixtures: the real order-policy server started from a bundle, and that bundle's own cases.

Set by ``make client-python`` (which installs this package from its wheel into a fresh venv):
``ORDER_POLICY_COMMAND`` (how to run ``order-policy``), ``ORDER_POLICY_TEST_BUNDLE`` (a bundle
directory) and ``ORDER_POLICY_TEST_CASES`` (its cases as JSON: ``python -m tests.clients.export_cases``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from order_policy_client import Client
from order_policy_client.testing import ServerProcess, running_server


def _env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        pytest.fail(f"{name} is not set: run these tests with `make client-python`")
    return value


@pytest.fixture(scope="session")
def bundle() -> Path:
    return Path(_env("ORDER_POLICY_TEST_BUNDLE"))


@pytest.fixture(scope="session")
def cases() -> list[dict[str, Any]]:
    loaded = json.loads(Path(_env("ORDER_POLICY_TEST_CASES")).read_text())
    assert len(loaded) > 20, "the bundle has too few cases to test the clients with"
    return loaded


@pytest.fixture(scope="session")
def server(bundle: Path) -> Iterator[ServerProcess]:
    """One server shared by the tests that do not stop it."""
    with running_server(bundle) as started:
        yield started


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    with Client(server.address, timeout=10.0) as c:
        yield c


def bundle_copy(bundle: Path, dest: Path, revision: str) -> Path:
    """A copy of ``bundle`` whose manifest names another revision."""
    shutil.copytree(bundle, dest)
    manifest = dest / "manifest.yaml"
    text, count = re.subn(r"(?m)^revision:.*$", f"revision: '{revision}'", manifest.read_text())
    assert count == 1, "the manifest has no top-level `revision:` line"
    manifest.write_text(text)
    return dest
