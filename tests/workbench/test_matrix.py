"""The matrix: every cell decided by the engine, situations read from the rules, diffs cell by cell."""

from __future__ import annotations

import datetime as dt

import pytest

from server.errors import SnapshotError
from server.registry import build_decider
from server.workbench import ANY, ERROR, diff_matrices, matrix, rule_source
from tests.support.workbench import edit

NOW = dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC)


def _answer(decider, snapshot):
    try:
        d = decider.decide(snapshot)
    except SnapshotError as exc:
        return (ERROR, (), (), exc.field)
    return (d.outcome, tuple(r.code for r in d.reasons), tuple(f.code for f in d.follow_ups), "")


def _matrix_of(path):
    decider = build_decider(path)
    try:
        return matrix(decider, now=NOW)
    finally:
        decider.close()


def _rows(m, action, status):
    return {r.situation: r for r in m.rows if r.action == action and r.status == status}


def test_every_cell_is_what_decide_answers_for_its_snapshot(small):
    """Deciding each row's own snapshot again gives the row's outcome, reasons, follow-ups and error."""
    m = matrix(small, now=NOW)
    assert m.rows
    for row in m.rows:
        assert _answer(small, row.snapshot) == row.answer, row.key
        assert (row.decision is None) == (row.outcome == ERROR)
        assert row.snapshot.now == NOW


def test_rows_cover_every_action_method_detailed_and_top_status(small):
    """One or more rows for each action x method x (detailed status, then each top status alone)."""
    m = matrix(small, now=NOW)
    vocab = small.bundle.vocabulary
    want = {
        (a, meth, s)
        for a in ("cancel_order", "cancel_appointment")
        for meth, statuses in vocab.methods.items()
        for s in [*statuses, *vocab.top_statuses]
    }
    assert {(r.action, r.method, r.status) for r in m.rows} == want
    assert len({r.key for r in m.rows}) == len(m.rows), "row keys are unique"
    top_only = [r for r in m.rows if r.status in vocab.top_statuses]
    assert all("events" not in r.snapshot.order for r in top_only)


def test_a_status_whose_decision_depends_on_nothing_else_has_one_row(small):
    """A terminal status is one row, situation `any`."""
    rows = _rows(matrix(small, now=NOW), "cancel_order", "completed.visit.completed")
    assert list(rows) == [ANY]
    assert rows[ANY].outcome == "DENY"
    assert rows[ANY].reasons == ("CLOSED",)
    assert rows[ANY].rules == ("closed",)


def test_situations_follow_the_thresholds_sets_and_providers_the_rules_name(small):
    """Notice bands at each param threshold, the named set as a class, the named provider apart."""
    rows = _rows(matrix(small, now=NOW), "cancel_order", "received.visit.ordered")
    assert set(rows) == {
        "no appointment",
        *(
            f"appointment open_appointment, {band}, {prov}"
            for band in ("notice <= fee_window (2h)", "notice > fee_window (2h)", "no start time")
            for prov in ("other provider", "provider beta")
        ),
        "appointment done, other provider",
        "appointment done, provider beta",
    }
    at = rows["appointment open_appointment, notice <= fee_window (2h), other provider"]
    past = rows["appointment open_appointment, notice > fee_window (2h), other provider"]
    # Each band's snapshot sits on the boundary: exactly 2 h, and 2 h + 1 s.
    assert at.snapshot.appointment["start_at"] == (NOW + dt.timedelta(hours=2)).isoformat()
    assert past.snapshot.appointment["start_at"] == (NOW + dt.timedelta(hours=2, seconds=1)).isoformat()
    assert (at.follow_ups, past.follow_ups) == (("FEE",), ("REFUND",))
    assert rows["appointment open_appointment, notice > fee_window (2h), provider beta"].follow_ups == (
        "REFUND",
        "CALL_BETA",
    )


def test_strict_comparisons_and_first_match_errors_show_as_such(small):
    """`lt` gives `<`/`>=` bands; an `invalid` rule gives an ERROR row naming that rule."""
    rows = _rows(matrix(small, now=NOW), "cancel_appointment", "received.visit.ordered")
    assert rows["no appointment"].outcome == ERROR
    assert rows["no appointment"].rules == ("appointment_required",)
    assert rows["no appointment"].error.field == "appointment"
    assert rows["no appointment"].to_json()["error"]["field"] == "appointment"
    late = rows["appointment booked/started, notice < late_window (30m)"]
    assert late.follow_ups == ("LATE",)
    assert late.snapshot.appointment["start_at"] == (NOW + dt.timedelta(minutes=30, seconds=-1)).isoformat()
    assert rows["appointment booked/started, notice >= late_window (30m)"].follow_ups == ()
    assert rows["appointment done"].reasons == ("CLOSED",)


def test_ship_day_is_a_situation_only_where_it_changes_the_decision(small):
    """The kit's received status splits by ship day; its shipped status does not."""
    m = matrix(small, now=NOW)
    rows = _rows(m, "cancel_order", "received.kit.ordered")
    assert set(rows) == {"ship day due", "ship day later/unknown"}
    assert rows["ship day due"].follow_ups == ("SHIPS_TODAY",)
    assert list(_rows(m, "cancel_order", "collecting_sample.kit.shipped")) == [ANY]


def test_situations_come_from_the_bundle_not_from_known_names(small_copy):
    """Renamed params, sets and providers, and a new threshold, show up in the situations."""
    edit(small_copy / "data/settings.yaml", "fee_window: 2h", "notice_limit: 3h")
    for f in ("policies/cancel_order.yaml", "data/catalogue.yaml"):
        (small_copy / f).write_text((small_copy / f).read_text().replace("fee_window", "notice_limit"))
    edit(
        small_copy / "policies/cancel_appointment.yaml",
        "appointment_notice_seconds: {lt: {param: late_window}}",
        "appointment_notice_seconds: {lt: {param: late_window}}\n      appointment_provider: gamma",
    )
    m = _matrix_of(small_copy)
    order_rows = _rows(m, "cancel_order", "received.visit.ordered")
    assert "appointment open_appointment, notice <= notice_limit (3h), other provider" in order_rows
    appt_rows = _rows(m, "cancel_appointment", "received.visit.ordered")
    assert appt_rows["appointment booked/started, notice < late_window (30m), provider gamma"].follow_ups == ("LATE",)
    assert appt_rows["appointment booked/started, notice < late_window (30m), other provider"].follow_ups == ()


def test_actions_filter_and_bad_arguments(small):
    """`actions` keeps those actions; an unknown action or a naive `now` is an error naming the field."""
    m = matrix(small, now=NOW, actions=["cancel_appointment"])
    assert {r.action for r in m.rows} == {"cancel_appointment"}
    with pytest.raises(SnapshotError) as exc:
        matrix(small, now=NOW, actions=["cancel_everything"])
    assert exc.value.field == "action"
    assert "`cancel_everything`" in str(exc.value)
    with pytest.raises(SnapshotError) as exc:
        matrix(small, now=dt.datetime(2026, 3, 10, 12))
    assert exc.value.field == "now"


def test_json_contract(small):
    """bundle {name, revision, digest}, now, rows with the documented fields."""
    doc = matrix(small, now=NOW).to_json()
    assert doc["bundle"] == {"name": "small", "revision": "1", "digest": small.ref.digest}
    assert doc["now"] == "2026-03-10T12:00:00+00:00"
    keys = {"action", "method", "status", "situation", "outcome", "reasons", "follow_ups", "rules"}
    assert all(set(r) in (keys, keys | {"error"}) for r in doc["rows"])


def test_diff_of_a_bundle_with_itself_is_empty_and_a_changed_rule_shows_its_cells(small, small_copy):
    """Only the cells whose answer changed are listed, with the row before and after."""
    assert diff_matrices(matrix(small, now=NOW), matrix(small, now=NOW)) == []
    edit(small_copy / "policies/cancel_order.yaml", "reasons: [SHIPPED]", "reasons: [CLOSED]")
    changes = diff_matrices(matrix(small, now=NOW), _matrix_of(small_copy))
    assert [c.key for c in changes] == [("cancel_order", "kit", "collecting_sample.kit.shipped", ANY)]
    assert (changes[0].before.reasons, changes[0].after.reasons) == (("SHIPPED",), ("CLOSED",))


def test_diff_shows_rows_present_on_one_side_only(small, small_copy):
    """A moved threshold renames the band rows: old rows only before, new rows only after."""
    edit(small_copy / "data/settings.yaml", "fee_window: 2h", "fee_window: 3h")
    changes = diff_matrices(matrix(small, now=NOW), _matrix_of(small_copy))
    assert changes
    assert all((c.before is None) != (c.after is None) for c in changes)
    assert any("(3h)" in c.key[3] and c.before is None for c in changes)
    assert any("(2h)" in c.key[3] and c.after is None for c in changes)


def test_rule_source_gives_the_rule_as_written(small, small_copy):
    """File, line and the rule's own lines (comments before the next rule left out); a changed file falls back."""
    file, line, text = rule_source(small, "open_top")
    assert file == "policies/cancel_order.yaml"
    lines = (small.bundle.root / file).read_text().splitlines()
    assert lines[line - 1].strip() == "- id: open_top"
    assert text.startswith("- id: open_top\n")
    assert "# Follow-ups" not in text
    assert "visit_refund" not in text
    assert "top_status: {in: [received, collecting_sample]}" in text
    copy = build_decider(small_copy)
    try:
        (small_copy / file).write_text((small_copy / file).read_text().replace("collecting_sample]", "completed]"))
        _, _, fallback = rule_source(copy, "open_top")
    finally:
        copy.close()
    assert "completed" not in fallback
    assert "collecting_sample" in fallback
    assert "id: open_top" in fallback
    with pytest.raises(KeyError):
        rule_source(small, "no_such_rule")


def test_matrices_built_to_compare_show_a_moved_threshold_as_the_cells_between(small, small_copy):
    """With each other's situations both matrices have the same rows; only the band between 2 h and 3 h differs."""
    edit(small_copy / "data/settings.yaml", "fee_window: 2h", "fee_window: 3h")
    changed = build_decider(small_copy)
    try:
        before = matrix(small, now=NOW, compare_with=[changed])
        after = matrix(changed, now=NOW, compare_with=[small])
    finally:
        changed.close()
    assert [r.key for r in before.rows] == [r.key for r in after.rows]
    changes = diff_matrices(before, after)
    assert changes
    assert all(c.before is not None and c.after is not None for c in changes)
    assert {c.key[3].split(", ")[1] for c in changes} == {"notice > fee_window (2h) and <= fee_window (3h)"}
    assert all((c.before.follow_ups[0], c.after.follow_ups[0]) == ("REFUND", "FEE") for c in changes)
