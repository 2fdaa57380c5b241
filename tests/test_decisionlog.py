"""The decision log: the allowed fields only, rotation, bounded waiting, and no hostile
input, full disk or failing sink that stops it or loses a decision without counting it."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import subprocess
import threading
import time
from pathlib import Path

import orjson
import pytest

from server import decisionlog
from server.decisionlog import DecisionLog, input_digest
from server.model import Snapshot
from server.registry import build_decider
from tests.support.servers import serving, wait_until

ORDER = {
    "id": "ord-1",
    "created_at": "2026-03-09T14:03:12+00:00",
    "status": "received",
    "details": {"type": "walk_in_test"},
    "patient_details": {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": "ada@example.com",
        "phone_number": "+15555550100",
        "dob": "1988-07-14",
    },
    "patient_address": {"first_line": "1 Main St", "city": "Brooklyn", "zip": "11215"},
    "events": [{"id": 1, "created_at": "2026-03-09T14:03:12+00:00", "status": "received.walk_in_test.ordered"}],
}
NOW = dt.datetime(2026, 3, 10, tzinfo=dt.UTC)
ORDER_TEXT = json.dumps(ORDER)
INPUTS = (1, ORDER_TEXT, None, None)  # action, order as received, no appointment, no now


def test_entries_hold_the_decision_and_no_patient_data(tmp_path, fixture_bundle):
    """One JSON line per decision with ids, codes, rules, bundle and digest; no names, addresses or contacts."""
    decider = build_decider(fixture_bundle)
    path = tmp_path / "decisions.log"
    dlog = DecisionLog(str(path))
    snap = Snapshot("cancel_order", ORDER, None, NOW)
    decision = decider.decide(snap)
    dlog.record(decision, INPUTS, 42.0)
    dlog.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["decision_id"] == decision.decision_id
    assert (entry["action"], entry["order_id"], entry["outcome"]) == ("cancel_order", "ord-1", "ALLOW")
    assert entry["reasons"] == ["CANCELLABLE_STATE"]
    assert entry["rules"] == ["walk_in_cancellable"]
    assert entry["bundle"]["revision"] == decider.ref.revision
    assert entry["input_digest"].startswith("sha256:")
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
        dlog.record(decider.decide(snap), INPUTS, 1.0)
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
        dlog.record(decider.decide(snap), INPUTS, 1.0)
    dlog.close()
    assert time.monotonic() - start >= 0.2
    assert dlog.waits > 0
    assert dlog.dropped == 0
    assert len((tmp_path / "s.log").read_text().splitlines()) == 20
    decider.close()


@pytest.fixture(scope="module")
def decider(fixture_bundle):
    d = build_decider(fixture_bundle)
    yield d
    d.close()


@pytest.fixture
def decisions(decider):
    """A source of fresh decisions of one valid snapshot (what they decide does not matter here)."""
    snap = Snapshot("cancel_order", ORDER, None, NOW)
    return lambda: decider.decide(snap)


def _lines(*paths: Path) -> list[dict]:
    """Every line of the files, each of which must be a whole JSON object."""
    out = []
    for path in paths:
        data = path.read_bytes()
        assert data == b"" or data.endswith(b"\n"), f"torn last line in {path}"
        out.extend(orjson.loads(line) for line in data.splitlines())
    return out


def test_the_input_digest_hashes_the_text_as_received_without_parsing_it():
    """A 1,000-level nested array hashes like any text; formatting and every part count."""
    deep = '{"id": "o", "x": ' + "[" * 1000 + "]" * 1000 + "}"
    assert input_digest((1, deep, None, None)).startswith("sha256:")
    assert input_digest((1, '{"a":1}', None, None)) != input_digest((1, '{"a": 1}', None, None))
    assert input_digest((1, "ab", "c", None)) != input_digest((1, "a", "bc", None))
    assert input_digest((1, "ab", None, None)) != input_digest((2, "ab", None, None))
    assert input_digest((1, "é", None, None)) == input_digest((1, "é".encode(), None, None))


def test_a_deeply_nested_ignored_field_does_not_stop_the_log(tmp_path, fixture_bundle, decisions):
    """Decide with a 1,000-level nested array in an ignored field (decided, or refused as too deep
    to check for duplicate keys), then 30 more: every decision is logged, no call waits for the
    writer, and close() returns at once. Logged directly, such an input is hashed, not parsed."""
    import grpc

    from server._gen.orderpolicy.v1 import order_policy_pb2 as pb
    from server._gen.orderpolicy.v1 import order_policy_pb2_grpc as pb_grpc

    path = tmp_path / "d.log"
    dlog = DecisionLog(str(path), capacity=4, max_wait=1.0)
    hostile = ORDER_TEXT[:-1] + ', "notes": ' + "[" * 1000 + "]" * 1000 + "}"
    ids = []
    with serving(fixture_bundle) as server:
        server.servicer._decision_log = dlog
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.OrderPolicyServiceStub(channel)
            start = time.monotonic()
            for text in [hostile] + [ORDER_TEXT] * 30:
                try:
                    reply = stub.Decide(pb.DecideRequest(action=pb.ACTION_CANCEL_ORDER, order_json=text), timeout=10)
                except grpc.RpcError as exc:
                    assert text is hostile
                    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
                    continue
                ids.append(reply.decision.decision_id)
            elapsed = time.monotonic() - start
    direct = decisions()
    dlog.record(direct, (pb.ACTION_CANCEL_ORDER, hostile, None, None), 1.0)
    start = time.monotonic()
    dlog.close(timeout=5)
    assert time.monotonic() - start < 2
    assert elapsed < 5  # 30 calls that each waited for a dead writer would take 30 s
    assert dlog.waits == 0
    assert dlog.dropped == 0
    assert dlog.failures == 0
    entries = _lines(path)
    assert [e["decision_id"] for e in entries] == [*ids, direct.decision_id]
    assert len(ids) >= 30
    assert entries[-1]["input_digest"] == input_digest((pb.ACTION_CANCEL_ORDER, hostile, None, None))


def test_the_writer_survives_any_exception_and_counts_what_it_lost(tmp_path, decisions, caplog):
    """A sink raising RuntimeError, then a broken entry: each loss counted once, logged as one
    JSON line, and later decisions are written again."""
    from server.api.log import JsonFormatter

    counted = []
    path = tmp_path / "d.log"
    dlog = DecisionLog(str(path), on_drop=counted.append)
    real_write = dlog._sink.write
    dlog._sink.write = lambda data: (_ for _ in ()).throw(RuntimeError("boom"))
    caplog.set_level(logging.ERROR, logger="order_policy.decisionlog")
    dlog.record(decisions(), INPUTS, 1.0)
    wait_until(lambda: dlog.dropped == 1)
    dlog._sink.write = real_write
    dlog.record(decisions(), ("not", "a", object(), None), 1.0)  # its digest cannot be built
    kept = decisions()
    dlog.record(kept, INPUTS, 1.0)
    dlog.close()
    assert dlog.dropped == 2
    assert sum(counted) == 2
    assert dlog.failures == 1
    assert [e["decision_id"] for e in _lines(path)] == [kept.decision_id]
    drops = [r for r in caplog.records if r.getMessage() == "decision_log_dropped"]
    assert [r.fields["reason"] for r in drops] == ["decision_log_writer_error", "decision_log_entry_failed"]
    line = JsonFormatter().format(drops[0])
    assert "\n" not in line
    assert json.loads(line)["error_type"] == "RuntimeError"


def test_close_never_blocks_on_a_stuck_writer(tmp_path, decisions):
    """A sink that never returns and a full queue: close(timeout) returns within its timeout and
    record() after close counts the decision as dropped instead of waiting."""
    gate = threading.Event()
    dlog = DecisionLog(str(tmp_path / "d.log"), capacity=2, max_wait=0.2)
    dlog._sink.write = lambda data: gate.wait(30)
    for _ in range(4):
        dlog.record(decisions(), INPUTS, 1.0)
    start = time.monotonic()
    dlog.close(timeout=0.5)
    dlog.record(decisions(), INPUTS, 1.0)
    assert time.monotonic() - start < 1.5
    assert dlog.dropped >= 1
    gate.set()


def test_a_short_write_is_cut_back_and_counted(tmp_path, decisions, monkeypatch):
    """A write that stops halfway (the disk filled mid-line) leaves no torn line: the file is
    cut back, the batch's decisions are counted as dropped, and the next write succeeds."""
    path = tmp_path / "d.log"
    counted = []
    dlog = DecisionLog(str(path), on_drop=counted.append)
    kept = decisions()
    dlog.record(kept, INPUTS, 1.0)
    wait_until(lambda: dlog.written == 1)
    real = os.write
    monkeypatch.setattr(decisionlog.os, "write", lambda fd, data: real(fd, data[: len(data) // 2]))
    dlog.record(decisions(), INPUTS, 1.0)
    wait_until(lambda: dlog.dropped == 1)
    monkeypatch.setattr(decisionlog.os, "write", real)
    last = decisions()
    dlog.record(last, INPUTS, 1.0)
    dlog.close()
    assert [e["decision_id"] for e in _lines(path)] == [kept.decision_id, last.decision_id]
    assert counted == [1]
    assert dlog.written == 2


@contextlib.contextmanager
def _tiny_tmpfs(path: Path, size: str) -> object:
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_drops_whole_lines_counts_them_and_recovers(tmp_path, decisions, caplog):
    """On a 64 KiB tmpfs filled up: every line on disk is whole, written + dropped equals what
    was recorded, each drop is counted, and once space is freed decisions are written again."""
    caplog.set_level(logging.ERROR, logger="order_policy.decisionlog")
    with _tiny_tmpfs(tmp_path / "disk", "64k") as disk:
        filler = disk / "filler"
        filler.write_bytes(b"x" * 48 * 1024)
        counted = []
        dlog = DecisionLog(str(disk / "d.log"), on_drop=counted.append, max_bytes=1 << 30)
        for wave in range(40):  # about 90 KB of entries, a few at a time
            for _ in range(5):
                dlog.record(decisions(), INPUTS, 1.0)
            wait_until(lambda: dlog.written + dlog.dropped == 5 * (wave + 1))  # noqa: B023
        assert dlog.written > 0
        assert dlog.dropped > 0
        assert sum(counted) == dlog.dropped
        # Each failed write is counted; its log line is written at most once a second.
        lines = [r for r in caplog.records if r.getMessage() == "decision_log_dropped"]
        assert 1 <= len(lines) < dlog.dropped
        assert len(_lines(disk / "d.log")) == dlog.written
        filler.unlink()
        after = decisions()
        dlog.record(after, INPUTS, 1.0)
        dlog.close()
        entries = _lines(disk / "d.log")
        assert entries[-1]["decision_id"] == after.decision_id
        assert len(entries) == dlog.written
