"""Shared test options and fixtures."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUNDLE = ROOT / "rules" / "cancellation"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-goldens", action="store_true", help="rewrite golden files instead of comparing")


@pytest.fixture
def update_goldens(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-goldens"))


@pytest.fixture(scope="session")
def default_bundle() -> Path:
    return DEFAULT_BUNDLE


@pytest.fixture
def bundle_copy(tmp_path: Path) -> Iterator[Path]:
    """A private copy of the default bundle that a test may edit."""
    dest = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, dest)
    yield dest
