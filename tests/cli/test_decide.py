"""The command line contract: `decide --format json`, `check` and `test` exit codes and output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.bundles import FIXTURE_BUNDLE, ROOT

ORDER = {
    "id": "0f2d6a56-8b0e-4c1e-9d39-6c1d0b1f7e11",
    "created_at": "2026-03-09T14:03:12.118402+00:00",
    "status": "collecting_sample",
    "details": {"type": "walk_in_test", "data": {"id": "x", "appointment_id": "a1"}},
    "lab_test": {"method": "walk_in_test", "name": "Lipid panel"},
    "patient_details": {"first_name": "Ada", "email": "ada@example.com"},
    "events": [
        {"id": 1, "created_at": "2026-03-09T14:03:12+00:00", "status": "received.walk_in_test.ordered"},
        {
            "id": 2,
            "created_at": "2026-03-09T15:00:00+00:00",
            "status": "collecting_sample.walk_in_test.appointment_scheduled",
        },
    ],
}
APPOINTMENT = {
    "id": "a1",
    "order_id": ORDER["id"],
    "status": "confirmed",
    "provider": "quest",
    "type": "patient_service_center",
    "start_at": "2026-03-12T15:00:00+00:00",
}


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", *args], capture_output=True, text=True, cwd=ROOT, input=stdin, timeout=60
    )


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    order = tmp_path / "order.json"
    order.write_text(json.dumps(ORDER))
    appt = tmp_path / "appointment.json"
    appt.write_text(json.dumps(APPOINTMENT))
    return order, appt


def test_decide_json_is_the_documented_contract(files):
    """Exit 0; outcome, reasons, follow_ups (with method/path), bundle and now as documented."""
    order, appt = files
    proc = cli(
        "decide",
        "--bundle",
        str(FIXTURE_BUNDLE),
        "--order",
        str(order),
        "--appointment",
        str(appt),
        "--now",
        "2026-03-10T12:00:00Z",
        "--action",
        "cancel_order",
        "--format",
        "json",
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["outcome"] == "ALLOW"
    assert out["reasons"] == [
        {
            "code": "CANCELLABLE_STATE",
            "rule_id": "walk_in_cancellable",
            "message": "the order is in collecting_sample.walk_in_test.appointment_scheduled, "
            "which can still be cancelled",
        }
    ]
    assert [(f["code"], f["method"], f["path"]) for f in out["follow_ups"]] == [
        ("CANCEL_PSC_APPOINTMENT", "PATCH", f"/v3/order/{ORDER['id']}/psc/appointment/cancel")
    ]
    assert out["bundle"] == {"name": "cancellation_fixture", "revision": "fixture.1"}
    assert out["now"] == "2026-03-10T12:00:00+00:00"
    assert "explanation" not in out


def test_decide_explain_lists_facts_and_matched_rules(files):
    """With --explain the JSON carries the derived facts and every rule that matched."""
    order, appt = files
    proc = cli(
        "decide",
        "--bundle",
        str(FIXTURE_BUNDLE),
        "--order",
        str(order),
        "--appointment",
        str(appt),
        "--now",
        "2026-03-10T12:00:00Z",
        "--explain",
        "--format",
        "json",
    )
    exp = json.loads(proc.stdout)["explanation"]
    assert exp["facts"]["method"] == "walk_in_test"
    assert exp["facts"]["appointment_notice_seconds"] == 2 * 86400 + 3 * 3600
    assert exp["matched_rules"] == ["walk_in_cancellable", "walk_in_cancel_psc_appointment"]
    assert "patient" not in json.dumps(exp)


def test_decide_human_output_names_outcome_and_reason(files):
    """The human format starts with the outcome and lists each reason and follow-up."""
    order, _ = files
    proc = cli("decide", "--bundle", str(FIXTURE_BUNDLE), "--order", str(order), "--now", "2026-03-10T12:00:00Z")
    assert proc.returncode == 0
    assert proc.stdout.startswith("ALLOW  cancel_order of order ")
    assert "reason    CANCELLABLE_STATE" in proc.stdout


def test_invalid_snapshot_exits_non_zero_with_one_line_naming_the_field(tmp_path):
    """An event without created_at: exit 3, one line on stderr naming the field; JSON on stdout with --format json."""
    bad = dict(ORDER, events=[{"id": 1, "status": "received.walk_in_test.ordered"}])
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    human = cli("decide", "--bundle", str(FIXTURE_BUNDLE), "--order", str(path))
    assert human.returncode == 3
    assert human.stdout == ""
    assert human.stderr.count("\n") == 1
    assert "`order.events[0].created_at`" in human.stderr
    machine = cli("decide", "--bundle", str(FIXTURE_BUNDLE), "--order", str(path), "--format", "json")
    assert machine.returncode == 3
    assert json.loads(machine.stdout)["error"] == {
        "code": "request_invalid",
        "field": "order.events[0].created_at",
        "message": "invalid snapshot: `order.events[0].created_at`: missing",
    }


def test_order_from_stdin_and_non_json_input(tmp_path):
    """`--order -` reads stdin; text that is not JSON is an invalid snapshot naming `order`."""
    ok = cli(
        "decide",
        "--bundle",
        str(FIXTURE_BUNDLE),
        "--order",
        "-",
        "--now",
        "2026-03-10T12:00:00Z",
        "--format",
        "json",
        stdin=json.dumps(ORDER),
    )
    assert ok.returncode == 0
    assert json.loads(ok.stdout)["outcome"] == "ALLOW"
    bad = cli("decide", "--bundle", str(FIXTURE_BUNDLE), "--order", "-", "--format", "json", stdin="{nope")
    assert bad.returncode == 3
    assert json.loads(bad.stdout)["error"]["field"] == "order"


def test_check_reports_ok_for_the_default_bundle():
    """`check` exits 0 and says every known status reaches a decision."""
    proc = cli("check", str(FIXTURE_BUNDLE))
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.startswith("ok: bundle cancellation_fixture@")


def test_check_exits_non_zero_listing_every_error(bundle_copy):
    """An invalid bundle: exit 3, each error with file:line, code and hint."""
    policy = bundle_copy / "policies/cancel_order.yaml"
    policy.write_text(
        policy.read_text()
        .replace("reasons: [TESTKIT_SHIPPED]", "reasons: [TESTKIT_SHIPED]")
        .replace("top_status_conflict: true", "top_status_confict: true", 1)
    )
    proc = cli("check", str(bundle_copy), "--format", "json")
    assert proc.returncode == 3
    out = json.loads(proc.stdout)
    assert out["valid"] is False
    assert {e["code"] for e in out["errors"]} == {"validation_unknown_reason", "validation_unknown_fact"}
    human = cli("check", str(bundle_copy))
    assert "policies/cancel_order.yaml:" in human.stdout
    assert "help: did you mean `TESTKIT_SHIPPED`?" in human.stdout


def test_test_command_passes_on_the_default_bundle():
    """`test` runs the bundle's own cases and exits 0 when all pass."""
    proc = cli("test", str(FIXTURE_BUNDLE))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert proc.stdout.strip().endswith(" failed")
    assert ", 0 failed" in proc.stdout


def test_test_command_names_the_failing_case_and_the_difference(bundle_copy):
    """A wrong expectation: exit 2, the case named with its file:line and the difference."""
    shutil.rmtree(bundle_copy / "tests", ignore_errors=True)
    (bundle_copy / "tests").mkdir()
    (bundle_copy / "tests" / "zz_wrong.yaml").write_text(
        "cases:\n"
        "  - name: deliberately wrong expectation\n"
        "    action: cancel_order\n"
        '    now: "2026-03-10T12:00:00Z"\n'
        f"    order: {json.dumps(ORDER)}\n"
        "    expect: {outcome: DENY, reasons: [TERMINAL_STATE], follow_ups: []}\n"
    )
    proc = cli("test", str(bundle_copy))
    assert proc.returncode == 2
    assert "FAIL deliberately wrong expectation (tests/zz_wrong.yaml:2)" in proc.stdout
    assert "outcome: expected DENY, got ALLOW" in proc.stdout
    assert proc.stdout.rstrip().endswith("0 passed, 1 failed")
