"""Reading recorded requests and replaying them against two bundles."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from server.registry import build_decider
from server.workbench import InputError, InputRecord, read_inputs, replay
from server.workbench import inputs as inputs_module
from tests.support.workbench import edit, line, visit


def test_read_inputs_names_each_bad_line_by_number(tmp_path):
    """Good lines become records; blank lines are skipped; each bad envelope is an error at its line."""
    path = tmp_path / "capture.jsonl"
    path.write_text(
        "\n".join(
            [
                line("r-1"),
                "",
                "{not json",
                "[1, 2]",
                json.dumps({"action": "cancel_order"}),
                json.dumps({"action": 7, "order": {}}),
                json.dumps({"action": "cancel_order", "order": {}, "appointment": "soon"}),
                json.dumps({"action": "cancel_order", "order": {}, "now": "2026-03-10T12:00:00"}),
                json.dumps({"action": "cancel_order", "order": {}, "request_id": 5}),
                json.dumps({"action": "cancel_order", "order": {"id": "x"}, "extra": "ignored"}),
            ]
        )
        + "\n"
    )
    got = list(read_inputs(path))
    assert [type(r).__name__ for r in got] == ["InputRecord"] + ["InputError"] * 7 + ["InputRecord"]
    assert got[0].request_id == "r-1"
    assert got[0].now == dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC)
    errors = got[1:8]
    assert [e.line for e in errors] == [3, 4, 5, 6, 7, 8, 9]
    assert [e.field for e in errors] == ["", "", "order", "action", "appointment", "now", "request_id"]
    assert str(errors[0]).startswith(f"{path}:3: not valid JSON")
    assert "got an array" in errors[1].message
    assert "no time-zone offset" in errors[5].message
    assert got[-1].request_id == f"{path}:10"
    assert got[-1].now is None
    assert got[-1].line == 10


def test_an_oversized_line_is_one_error_and_reading_goes_on(tmp_path, monkeypatch):
    """A line longer than the limit is skipped whole and named; the next line is read."""
    monkeypatch.setattr(inputs_module, "MAX_LINE_BYTES", 500)
    path = tmp_path / "capture.jsonl"
    path.write_text(line("big", order={"id": "x" * 2000}) + "\n" + line("after") + "\n")
    big, after = list(read_inputs(path))
    assert isinstance(big, InputError)
    assert big.line == 1
    assert "longer than 500 bytes" in big.message
    assert isinstance(after, InputRecord)
    assert after.request_id == "after"
    assert after.line == 2


def test_a_directory_holds_request_files_and_rotated_captures(tmp_path):
    """`*.json` files are one request each, `*.jsonl*` files (rotated ones too) are lines; by name."""
    (tmp_path / "a.json").write_text(line("from-json"))
    (tmp_path / "b.jsonl.1").write_text(line("rotated") + "\n")
    (tmp_path / "c.jsonl").write_text(line("current") + "\n")
    (tmp_path / "notes.txt").write_text("not a request")
    assert [r.request_id for r in read_inputs(tmp_path)] == ["from-json", "rotated", "current"]


def test_a_missing_or_unreadable_input_raises(tmp_path):
    """Reading fails with OSError (the command exits 1), not with a silent empty input."""
    with pytest.raises(FileNotFoundError):
        list(read_inputs(tmp_path / "missing.jsonl"))
    (tmp_path / "broken.jsonl").symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError):
        list(read_inputs(tmp_path))


@pytest.fixture
def changed(small_copy):
    """The small bundle with a 3 h fee window (2 h + 1 s of notice now keeps the fee)."""
    edit(small_copy / "data/settings.yaml", "fee_window: 2h", "fee_window: 3h")
    decider = build_decider(small_copy)
    yield decider
    decider.close()


def test_replay_groups_changed_requests_by_transition(small, changed, tmp_path):
    """Unchanged requests are counted, changed ones grouped with every id; input errors counted apart."""
    path = tmp_path / "capture.jsonl"
    path.write_text(
        "\n".join(
            [
                line("far-1", **visit("2026-03-10T15:00:01Z")),  # 3 h + 1 s: refunded under both
                line("edge-1", **visit("2026-03-10T14:00:01Z")),  # 2 h + 1 s: REFUND -> FEE
                line("edge-2", **visit("2026-03-10T14:30:00Z")),  # 2.5 h: REFUND -> FEE
                line("near-1", **visit("2026-03-10T13:00:00Z")),  # 1 h: FEE under both
                line("bad-1", **visit(status="received")),  # an invalid status under both
                "oops",
            ]
        )
        + "\n"
    )
    impact = replay(small, changed, read_inputs(path))
    assert (impact.inputs, impact.errors, impact.changed) == (5, 1, 2)
    (group,) = impact.groups
    assert group.before == {"outcome": "ALLOW", "reasons": ["OPEN"], "follow_ups": ["REFUND"]}
    assert group.after == {"outcome": "ALLOW", "reasons": ["OPEN"], "follow_ups": ["FEE"]}
    assert (group.count, group.request_ids) == (2, ["edge-1", "edge-2"])
    doc = impact.to_json(small.ref, changed.ref)
    assert {"old", "new", "inputs", "errors", "changed", "groups"} <= set(doc)
    assert doc["groups"][0]["share"] == pytest.approx(2 / 5)
    assert doc["input_errors"][0]["line"] == 6


def test_an_error_under_one_bundle_and_a_decision_under_the_other_is_a_change(small, small_copy, tmp_path):
    """Dropping the rule that requires an appointment turns errors into decisions: a change."""
    text = (small_copy / "policies/cancel_appointment.yaml").read_text()
    start = text.index("  - id: appointment_required")
    end = text.index("  - id: appointment_done")
    (small_copy / "policies/cancel_appointment.yaml").write_text(text[:start] + text[end:])
    relaxed = build_decider(small_copy)
    try:
        records = [InputRecord("r-1", "cancel_appointment", None, visit()["order"], None, "mem", 1)]
        impact = replay(small, relaxed, records, now=dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC))
    finally:
        relaxed.close()
    (group,) = impact.groups
    assert group.before == {"error": "request_invalid", "field": "appointment"}
    assert group.after["outcome"] == "ALLOW"
    assert group.request_ids == ["r-1"]


def test_each_request_is_decided_at_its_own_now(small, changed):
    """The same request recorded at two instants lands on both sides of the threshold."""
    order_appt = visit("2026-03-10T14:00:01Z")
    early = InputRecord(
        "early",
        "cancel_order",
        dt.datetime(2026, 3, 10, 11, tzinfo=dt.UTC),
        order_appt["order"],
        order_appt["appointment"],
        "mem",
        1,
    )
    late = InputRecord(
        "late",
        "cancel_order",
        dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC),
        order_appt["order"],
        order_appt["appointment"],
        "mem",
        2,
    )
    impact = replay(small, changed, [early, late])
    assert [g.request_ids for g in impact.groups] == [["late"]]


def test_replay_answers_are_those_of_decide_when_facts_are_shared(small, changed, tmp_path):
    """Bundles that differ in a param share the facts: every answer equals deciding with each bundle."""
    from server.workbench.replay import _same_facts, answer, answers

    assert _same_facts(small, changed)
    stamps = ["2026-03-10T13:00:00Z", "2026-03-10T14:00:00Z", "2026-03-10T14:00:01Z", "2026-03-10T15:00:01Z", None]
    records = [
        InputRecord(
            f"r-{i}-{j}",
            action,
            dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC),
            v["order"],
            v["appointment"] if action == "cancel_order" or j % 2 else None,
            "mem",
            i,
        )
        for i, stamp in enumerate(stamps)
        for j, action in enumerate(["cancel_order", "cancel_appointment", "cancel_appointment"])
        for v in [visit(stamp), visit(stamp, status="completed.visit.completed"), visit(stamp, status="x")]
    ]
    now = dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC)
    for record in records:
        assert answers(small, changed, record, now, True) == (answer(small, record, now), answer(changed, record, now))
    assert any(answer(small, r, now) != answer(changed, r, now) for r in records)
    assert any(answer(small, r, now)[0] == "error" for r in records)
