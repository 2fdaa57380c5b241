"""The workbench tests' own fixture bundle, text edits of its copies, and the command line in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.bundles import FIXTURES, ROOT, copy_bundle

#: A small bundle of the workbench tests' own: two methods, three appointment statuses, a named
#: set, two thresholds (`gt`/`lte` and `lt`), a ship-day rule, a provider rule, an `invalid` rule.
SMALL = FIXTURES / "bundles" / "workbench-small"


NOW = "2026-03-10T12:00:00+00:00"


@pytest.fixture
def small_copy(tmp_path: Path) -> Path:
    """A private copy of the small bundle that a test may edit."""
    return copy_bundle(tmp_path / "small", SMALL)


def visit(start_at: str | None = "2026-03-10T14:00:01Z", status: str = "received.visit.ordered") -> dict:
    order = {
        "id": "o-1",
        "details": {"type": "visit"},
        "events": [{"id": 1, "created_at": "2026-03-10T08:00:00Z", "status": status}],
    }
    appt = {"status": "booked", "provider": "alpha"}
    if start_at:
        appt["start_at"] = start_at
    return {"order": order, "appointment": appt}


def line(request_id: str, action: str = "cancel_order", now: str | None = NOW, **parts) -> str:
    doc = {"request_id": request_id, "action": action, **(parts or visit())}
    if now is not None:
        doc["now"] = now
    return json.dumps(doc)


def edit(path: Path, old: str, new: str) -> None:
    """Replace one exact piece of a bundle file (fails when it is not there exactly once)."""
    text = path.read_text()
    assert text.count(old) == 1, f"`{old}` is not in {path} exactly once"
    path.write_text(text.replace(old, new))


def cli(*args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        input=stdin,
        timeout=timeout,
    )
