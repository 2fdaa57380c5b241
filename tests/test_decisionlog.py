"""The decision log: the allowed fields only, rotation, and bounded waiting instead of silent drops."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

from server.decisionlog import DecisionLog
from server.model import Snapshot
from server.registry import build_decider

ORDER = {
    "id": "ord-1", "created_at": "2026-03-09T14:03:12+00:00", "status": "received",
    "details": {"type": "walk_in_test"},
    "patient_details": {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com",
                        "phone_number": "+15555550100", "dob": "1988-07-14"},
    "patient_address": {"first_line": "1 Main St", "city": "Brooklyn", "zip": "11215"},
    "events": [{"id": 1, "created_at": "2026-03-09T14:03:12+00:00", "status": "received.walk_in_test.ordered"}],
}
NOW = dt.datetime(2026, 3, 10, tzinfo=dt.UTC)


def test_entries_hold_the_decision_and_no_patient_data(tmp_path, fixture_bundle):
    """One JSON line per decision with ids, codes, rules, bundle and digest; no names, addresses or contacts."""
    decider = build_decider(fixture_bundle)
    path = tmp_path / "decisions.log"
    dlog = DecisionLog(str(path))
    snap = Snapshot("cancel_order", ORDER, None, NOW)
    decision = decider.decide(snap)
    dlog.record(decision, snap, 42.0)
    dlog.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["decision_id"] == decision.decision_id
    assert (entry["action"], entry["order_id"], entry["outcome"]) == ("cancel_order", "ord-1", "ALLOW")
    assert entry["reasons"] == ["CANCELLABLE_STATE"] and entry["rules"] == ["walk_in_cancellable"]
    assert entry["bundle"]["revision"] == decider.ref.revision and entry["input_digest"].startswith("sha256:")
    text = lines[0]
    for secret in ("Ada", "Lovelace", "ada@example.com", "5555550100", "1988-07-14", "Main St", "11215"):
        assert secret not in text
    decider.close()


def test_the_log_rotates_by_size(tmp_path, fixture_bundle):
    """Past max_bytes the file rotates to .1, .2 ...; nothing is lost."""
    decider = build_decider(fixture_bundle)
    snap = Snapshot("cancel_order", ORDER, None, NOW)
    path = tmp_path / "d.log"
    dlog = DecisionLog(str(path), max_bytes=4000, backups=50)
    for _ in range(200):
        dlog.record(decider.decide(snap), snap, 1.0)
    dlog.close()
    files = [path, *sorted(tmp_path.glob("d.log.*"))]
    assert len(files) > 2
    assert sum(len(f.read_text().splitlines()) for f in files) == 200
    decider.close()


def test_a_slow_writer_makes_callers_wait_and_counts_it_instead_of_dropping(tmp_path, fixture_bundle):
    """A tiny queue and a stalled sink: record() waits, the wait counter rises, no decision is lost."""
    decider = build_decider(fixture_bundle)
    snap = Snapshot("cancel_order", ORDER, None, NOW)
    dlog = DecisionLog(str(tmp_path / "s.log"), capacity=2, max_wait=5.0)
    gate = threading.Event()
    real_write = dlog._sink.write

    def slow(data: bytes) -> None:
        gate.wait(5)
        real_write(data)

    dlog._sink.write = slow
    threading.Timer(0.3, gate.set).start()
    start = time.monotonic()
    for _ in range(20):
        dlog.record(decider.decide(snap), snap, 1.0)
    dlog.close()
    assert time.monotonic() - start >= 0.2
    assert dlog.waits > 0 and dlog.dropped == 0
    assert len((tmp_path / "s.log").read_text().splitlines()) == 20
    decider.close()
