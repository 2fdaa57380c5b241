"""Fixtures of the workbench tests: the small bundle compiled, and private copies to edit."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from server.registry import build_decider
from tests.support.workbench import SMALL, small_copy

__all__ = ["small", "small_copy"]


@pytest.fixture(scope="module")
def small() -> Iterator[object]:
    decider = build_decider(SMALL)
    yield decider
    decider.close()
