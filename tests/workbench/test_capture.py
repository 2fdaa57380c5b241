"""The replayable capture: the projection is sound, holds no patient data, and replays as recorded."""

from __future__ import annotations

import datetime as dt
import json

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server._gen.orderpolicy.v1 import order_policy_pb2 as pb
from server._gen.orderpolicy.v1 import order_policy_pb2_grpc as pb_grpc
from server.cases import load_cases
from server.errors import SnapshotError
from server.facts import READ_FIELDS
from server.model import Snapshot
from server.registry import build_decider
from server.workbench import Capture, capture_entry, project, read_inputs
from server.workbench.inputs import parse_line
from tests.support.bundles import FIXTURE_BUNDLE
from tests.support.servers import serve_process
from tests.support.workbench import SMALL, cli

NOW = dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC)
PATIENT = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "dob": "1815-12-10",
    "email": "ada@example.com",
    "phone_number": "+15555550100",
}
ADDRESS = {"first_line": "12 St James's Square", "city": "London", "zip": "SW1Y"}


def _outcome(decider, snapshot):
    """Everything a caller sees of a decision (or the error), without the random decision id."""
    try:
        d = decider.decide(snapshot)
    except SnapshotError as exc:
        return ("error", exc.field, exc.message)
    return {k: v for k, v in d.to_dict(explain=True).items() if k != "decision_id"}


def _replayed(decider, snapshot):
    """The snapshot as the capture writes it and `diff --input` reads it back, decided again."""
    entry = capture_entry(snapshot, decider.decide(snapshot) if _decides(decider, snapshot) else _fake(snapshot))
    record = parse_line(json.dumps(entry).encode(), "capture", 1)
    return record, _outcome(decider, record.snapshot())


def _decides(decider, snapshot):
    try:
        decider.decide(snapshot)
    except SnapshotError:
        return False
    return True


class _fake:
    def __init__(self, snapshot):
        self.decision_id = "none"
        self.now = snapshot.now


@pytest.fixture(scope="module")
def rich():
    """The fixture bundle: its cases carry full Junction orders (patients, addresses)."""
    decider = build_decider(FIXTURE_BUNDLE)
    yield decider, load_cases(FIXTURE_BUNDLE)
    decider.close()


def test_every_case_decides_the_same_from_its_capture(rich, small):
    """For every case of both bundles: deciding the captured projection gives the same decision or error."""
    decider, cases = rich
    checked = 0
    for d, case_list in ((decider, cases), (small, load_cases(SMALL))):
        for case in case_list:
            try:
                snapshot = case.snapshot
            except SnapshotError:
                continue  # an order_json that does not parse: nothing is decided, nothing captured
            record, replayed = _replayed(d, snapshot)
            assert replayed == _outcome(d, snapshot), case.name
            checked += 1
    assert checked > len(cases) * 0.9


def test_the_capture_holds_only_the_fields_facts_read(rich):
    """No name, address, contact, date of birth or free text: only READ_FIELDS keys, at every level."""
    decider, cases = rich

    def keys_within(value, spec):
        if spec is None:
            return True
        if isinstance(spec, list):
            return all(keys_within(v, spec[0]) for v in value) if isinstance(value, list) else True
        if isinstance(value, dict):
            return set(value) <= set(spec) and all(keys_within(value[k], spec[k]) for k in value)
        return True

    for case in cases:
        if not isinstance(case.order, dict):
            continue
        order = {**case.order, "patient_details": PATIENT, "patient_address": ADDRESS, "notes": "call after 5"}
        snapshot = Snapshot(case.action, order, case.appointment, NOW)
        entry = capture_entry(snapshot, _fake(snapshot))
        assert keys_within(entry["order"], READ_FIELDS["order"])
        if isinstance(entry["appointment"], dict):
            assert keys_within(entry["appointment"], READ_FIELDS["appointment"])
        text = json.dumps(entry)
        for secret in [*PATIENT.values(), *ADDRESS.values(), "call after 5"]:
            assert secret not in text


_stamps = st.sampled_from(
    [
        "2026-03-09T14:03:12+00:00",
        "2026-03-09T17:59:59-05:00",
        "2026-03-10T12:00:00Z",
        "2026-03-10",
        "2026-03-11T09:00:00",
        "soon",
        None,
        7,
    ]
)
_statuses = st.sampled_from(
    [
        "received.visit.ordered",
        "collecting_sample.kit.shipped",
        "completed.visit.completed",
        "received.kit.placed",
        "received.kit.ordered",
        "received.other.ordered",
        "bad",
        "",
        3,
    ]
)
_events = st.fixed_dictionaries(
    {},
    optional={
        "id": st.integers(-2, 3) | st.sampled_from([2**70, "1", None, True]),
        "created_at": _stamps,
        "status": _statuses,
        "note": st.text(max_size=5),
        "actor": st.sampled_from([{"name": "Ada"}, None]),
    },
)
_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
    max_leaves=6,
)
_orders = st.fixed_dictionaries(
    {},
    optional={
        "id": st.sampled_from(["o-1", "", None, 5]),
        "status": st.sampled_from(["received", "completed", "collecting_sample", "Bad", None, 2]),
        "created_at": _stamps,
        "details": st.none()
        | st.sampled_from(["visit", 3])
        | st.fixed_dictionaries(
            {}, optional={"type": st.sampled_from(["kit", "visit", "other", None, 4]), "data": _junk}
        ),
        "lab_test": st.none()
        | st.fixed_dictionaries(
            {}, optional={"method": st.sampled_from(["kit", "visit", None]), "name": st.text(max_size=5)}
        ),
        "diagnostic_lab_test": st.none()
        | st.fixed_dictionaries({}, optional={"method": st.sampled_from(["kit", "x"])}),
        "events": st.lists(_events | _junk, max_size=3) | _junk,
        "last_event": st.none() | _events | _junk,
        "patient_details": st.just(PATIENT),
        "patient_address": st.just(ADDRESS),
        "extra": _junk,
    },
)
_appointments = (
    st.none()
    | _junk
    | st.fixed_dictionaries(
        {},
        optional={
            "id": st.text(max_size=3),
            "order_id": st.sampled_from(["o-1", "o-2", None, 1]),
            "status": st.sampled_from(["booked", "started", "done", "bogus", None]),
            "provider": st.sampled_from(["alpha", "beta", "", None, 4]),
            "start_at": _stamps,
            "address": st.just(ADDRESS),
            "notes": st.text(max_size=5),
        },
    )
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=_orders, appointment=_appointments, action=st.sampled_from(["cancel_order", "cancel_appointment"]))
def test_generated_snapshots_decide_the_same_from_their_projection(small, order, appointment, action):
    """Hypothesis: any order/appointment (valid or not) decides, or fails on the same field, once projected."""
    snapshot = Snapshot(action, order, appointment, NOW)
    projected = Snapshot(
        action,
        project(order, READ_FIELDS["order"]),
        None if appointment is None else project(appointment, READ_FIELDS["appointment"]),
        NOW,
    )
    assert _outcome(small, projected) == _outcome(small, snapshot)
    if _decides(small, snapshot):
        record, replayed = _replayed(small, snapshot)
        assert isinstance(record.request_id, str)
        assert replayed == _outcome(small, snapshot)


def test_capture_writer_samples_rotates_and_refuses_a_bad_rate(small, tmp_path):
    """Every decided request at rate 1, rotation keeps whole lines, a rate outside (0, 1] is refused."""
    snapshot = Snapshot("cancel_order", {"id": "o-1", "status": "received", "details": {"type": "visit"}}, None, NOW)
    decision = small.decide(snapshot)
    target = tmp_path / "capture.jsonl"
    cap = Capture(str(target), max_bytes=2000)
    for _ in range(60):
        cap.record(decision, snapshot)
    cap.close()
    files = sorted(tmp_path.iterdir())
    assert len(files) > 2
    assert all(f.stat().st_size <= 2000 for f in files)
    records = list(read_inputs(tmp_path))
    assert len(records) == 60
    assert all(r.order == snapshot.order for r in records)
    rare = Capture(str(tmp_path / "rare.jsonl"), sample=1e-9)
    for _ in range(200):
        rare.record(decision, snapshot)
    rare.close()
    assert rare.written == 0
    assert (tmp_path / "rare.jsonl").read_text() == ""
    for rate in (0.0, 1.5, -1):
        with pytest.raises(ValueError, match="sample rate must be in"):
            Capture(str(tmp_path / "x.jsonl"), sample=rate)


def test_serve_capture_replays_to_the_same_decisions(tmp_path):
    """`serve --capture`: one line per decided request (errors not captured); `diff --input` against the
    same bundle finds every one and no change; `decide --input` gives the live outcomes."""
    target = tmp_path / "capture.jsonl"
    order = {
        "id": "o-1",
        "details": {"type": "visit"},
        "patient_details": PATIENT,
        "events": [{"id": 1, "created_at": "2026-03-10T08:00:00Z", "status": "received.visit.ordered"}],
    }
    appointment = {"status": "booked", "provider": "beta", "start_at": "2099-01-01T00:00:00Z", "address": ADDRESS}
    outcomes = []
    with serve_process(SMALL, "--capture", str(target)) as proc:
        with grpc.insecure_channel(proc.address) as channel:
            stub = pb_grpc.OrderPolicyServiceStub(channel)
            for i, appt in enumerate([appointment, None, appointment]):
                extra = {"appointment_json": json.dumps(appt)} if appt else {}
                reply = stub.Decide(
                    pb.DecideRequest(
                        request_id=f"r-{i}", action=pb.ACTION_CANCEL_ORDER, order_json=json.dumps(order), **extra
                    ),
                    timeout=10,
                )
                outcomes.append([f.code for f in reply.decision.follow_ups])
            with pytest.raises(grpc.RpcError):
                stub.Decide(
                    pb.DecideRequest(action=pb.ACTION_CANCEL_APPOINTMENT, order_json=json.dumps(order)), timeout=10
                )
        assert proc.terminate() == 0
    text = target.read_text()
    assert text.count("\n") == 3
    assert "Ada" not in text
    assert "James" not in text
    proc = cli("diff", SMALL, SMALL, "--input", target, "--format", "json", "--fail-on-change")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["inputs"], doc["errors"], doc["changed"]) == (3, 0, 0)
    proc = cli("decide", "--bundle", SMALL, "--input", target, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert [[f["code"] for f in json.loads(x)["follow_ups"]] for x in proc.stdout.splitlines()] == outcomes


def test_decide_capture_writes_the_request_it_decided(tmp_path):
    """`decide --capture` appends the decided request; deciding the capture again gives the same answer."""
    order = tmp_path / "order.json"
    order.write_text(
        json.dumps(
            {
                "id": "o-9",
                "status": "received",
                "details": {"type": "kit"},
                "patient_details": PATIENT,
                "created_at": "2026-03-01T08:00:00Z",
            }
        )
    )
    target = tmp_path / "cap.jsonl"
    first = cli(
        "decide",
        "--bundle",
        SMALL,
        "--order",
        order,
        "--now",
        "2026-03-10T12:00:00Z",
        "--capture",
        target,
        "--format",
        "json",
    )
    assert first.returncode == 0, first.stderr
    assert "Ada" not in target.read_text()
    again = cli("decide", "--bundle", SMALL, "--input", target, "--format", "json")
    assert again.returncode == 0, again.stderr
    a, b = json.loads(first.stdout), json.loads(again.stdout)
    assert (b["outcome"], b["reasons"], b["follow_ups"], b["now"]) == (
        a["outcome"],
        a["reasons"],
        a["follow_ups"],
        a["now"],
    )


def test_serve_capture_with_workers_writes_one_file_each_and_replays_as_a_directory(tmp_path):
    """`serve --capture DIR/capture.jsonl --workers 2`: one file per worker; the directory replays every request."""
    folder = tmp_path / "captures"
    order = {"id": "o-1", "status": "received", "details": {"type": "kit"}, "patient_details": PATIENT}
    with serve_process(SMALL, "--capture", str(folder / "capture.jsonl"), workers=2) as proc:
        for i in range(6):  # a channel each: connections spread over the workers
            with grpc.insecure_channel(proc.address) as channel:
                pb_grpc.OrderPolicyServiceStub(channel).Decide(
                    pb.DecideRequest(request_id=f"r-{i}", action=pb.ACTION_CANCEL_ORDER, order_json=json.dumps(order)),
                    timeout=10,
                )
        assert proc.terminate() == 0
    assert sorted(p.name for p in folder.iterdir()) == ["capture.jsonl.w0", "capture.jsonl.w1"]
    doc = json.loads(cli("diff", SMALL, SMALL, "--input", folder, "--format", "json").stdout)
    assert (doc["inputs"], doc["errors"], doc["changed"]) == (6, 0, 0)
