"""Fixtures of the workbench tests: a small bundle of their own, and private copies to edit."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.registry import build_decider

SMALL = Path(__file__).resolve().parent / "bundles" / "small"


@pytest.fixture
def small_copy(tmp_path: Path) -> Path:
    """A private copy of the small bundle that a test may edit."""
    dest = tmp_path / "small"
    shutil.copytree(SMALL, dest)
    return dest


@pytest.fixture(scope="module")
def small() -> Iterator[object]:
    decider = build_decider(SMALL)
    yield decider
    decider.close()


def edit(path: Path, old: str, new: str) -> None:
    """Replace one exact piece of a bundle file (fails when it is not there exactly once)."""
    text = path.read_text()
    assert text.count(old) == 1, f"`{old}` is not in {path} exactly once"
    path.write_text(text.replace(old, new))
