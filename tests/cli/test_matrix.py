"""`order-policy matrix` and `order-policy diff` (without input) through the command line."""

from __future__ import annotations

import csv
import io
import json

from tests.support.workbench import SMALL, cli, edit

NOW = "2026-03-10T12:00:00Z"


def test_matrix_json_is_the_documented_contract():
    """Exit 0; bundle, now and rows with the documented fields; one action with --action."""
    proc = cli("matrix", SMALL, "--now", NOW, "--format", "json", "--action", "cancel_appointment")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) == {"bundle", "now", "rows"}
    assert doc["bundle"]["name"] == "small"
    assert doc["bundle"]["revision"] == "1"
    assert doc["bundle"]["digest"]
    assert doc["now"] == "2026-03-10T12:00:00+00:00"
    assert {r["action"] for r in doc["rows"]} == {"cancel_appointment"}
    row = next(
        r for r in doc["rows"] if r["status"] == "received.visit.ordered" and r["situation"] == "appointment done"
    )
    assert (row["outcome"], row["reasons"], row["follow_ups"], row["rules"]) == (
        "DENY",
        ["CLOSED"],
        [],
        ["appointment_done"],
    )
    assert "rows in" in proc.stderr


def test_matrix_text_markdown_csv_and_html_carry_the_same_rows():
    """Every format lists each row; CSV parses with one line per row."""
    rows = json.loads(cli("matrix", SMALL, "--now", NOW, "--format", "json").stdout)["rows"]
    text = cli("matrix", SMALL, "--now", NOW).stdout
    assert text.startswith("bundle small@1 decided at 2026-03-10T12:00:00+00:00")
    assert "appointment open_appointment, notice > fee_window (2h), provider beta" in text
    table = list(csv.DictReader(io.StringIO(cli("matrix", SMALL, "--now", NOW, "--format", "csv").stdout)))
    assert len(table) == len(rows)
    assert [(r["section"], r["status"], r["situation"], r["outcome"]) for r in table] == [
        (r["action"], r["status"], r["situation"], r["outcome"]) for r in rows
    ]
    md = cli("matrix", SMALL, "--now", NOW, "--format", "markdown").stdout
    assert md.count("\n| ") == len(rows) + 2  # two header lines
    page = cli("matrix", SMALL, "--now", NOW, "--format", "html").stdout
    assert page.startswith("<!doctype html>")
    assert page.count("<tr>") == len(rows) + 2


def test_matrix_bad_input_exit_codes(tmp_path, small_copy):
    """A missing bundle exits 1, an invalid bundle or `--now` 3, each with one error line."""
    proc = cli("matrix", tmp_path / "nowhere")
    assert proc.returncode == 1
    assert "does not exist" in proc.stderr
    edit(
        small_copy / "policies/cancel_order.yaml",
        "effect: deny\n    when:\n      status:",
        "effect: deny\n    when:\n      statuz:",
    )
    proc = cli("matrix", small_copy, "--format", "json")
    assert proc.returncode == 3
    assert json.loads(proc.stdout)["error"]["code"] == "bundle_invalid"
    proc = cli("matrix", SMALL, "--now", "2026-03-10T12:00:00")
    assert proc.returncode == 3
    assert "`now`" in proc.stderr


def test_diff_without_input_lists_changed_cells_and_fails_on_change(small_copy):
    """Identical bundles: no change, exit 0 even with --fail-on-change; a changed reason: its cell, exit 4."""
    proc = cli("diff", SMALL, SMALL, "--fail-on-change", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["changed"] == 0
    edit(small_copy / "policies/cancel_order.yaml", "reasons: [SHIPPED]", "reasons: [CLOSED]")
    proc = cli("diff", SMALL, small_copy, "--now", NOW, "--format", "json", "--fail-on-change")
    assert proc.returncode == 4, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["changed"] == 1
    assert doc["old"]["digest"] != doc["new"]["digest"]
    (change,) = doc["changes"]
    assert (change["status"], change["before"]["reasons"], change["after"]["reasons"]) == (
        "collecting_sample.kit.shipped",
        ["SHIPPED"],
        ["CLOSED"],
    )
    text = cli("diff", SMALL, small_copy, "--now", NOW)
    assert text.returncode == 0
    assert "1 of" in text.stdout
    assert "-  kit" in text.stdout
    assert "+  kit" in text.stdout
    assert cli("diff", SMALL, small_copy.parent / "missing").returncode == 1
