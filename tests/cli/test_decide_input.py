"""`decide --input` and `diff --input` through the command line: contracts, exit codes, bad input."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

from server.cli.workbench import Progress
from tests.support.workbench import SMALL, cli, edit, line, visit


def _capture(tmp_path, *lines):
    path = tmp_path / "capture.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_decide_input_answers_every_line_in_order(tmp_path):
    """One JSON line per input, in order: decisions with the request id, errors with their line; exit 3."""
    path = _capture(
        tmp_path,
        line("far", **visit("2026-03-10T15:00:00Z")),
        "{broken",
        line("near", **visit("2026-03-10T12:30:00Z")),
        line("bad", action="cancel_appointment", **visit(status="received.visit.nope")),
        line("none", action="cancel_appointment", order=visit()["order"]),
    )
    proc = cli("decide", "--bundle", SMALL, "--input", path, "--format", "json")
    assert proc.returncode == 3, proc.stderr
    out = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [(o["request_id"], o["line"]) for o in out] == [("far", 1), (None, 2), ("near", 3), ("bad", 4), ("none", 5)]
    assert [f["code"] for f in out[0]["follow_ups"]] == ["REFUND"]
    assert out[0]["bundle"]["name"] == "small"
    assert out[0]["now"] == "2026-03-10T12:00:00+00:00"
    assert out[1]["error"]["code"] == "input_invalid"
    assert "not valid JSON" in out[1]["error"]["message"]
    assert [f["code"] for f in out[2]["follow_ups"]] == ["FEE"]
    assert out[3]["outcome"] == "ALLOW"  # an unknown status is the policy's business, decided
    assert out[4]["error"] == {
        "code": "request_invalid",
        "field": "appointment",
        "message": "cancel_appointment needs the appointment",
    }
    assert "5 inputs (3 decided, 2 errors)" in proc.stderr
    assert "inputs/s" in proc.stderr
    human = cli("decide", "--bundle", SMALL, "--input", path)
    assert human.stdout.splitlines()[0].startswith("far  ALLOW OPEN + REFUND")
    assert f"{path}:2: error[input_invalid]: not valid JSON" in human.stdout
    assert f"{path}:5: error[request_invalid]: `appointment`: cancel_appointment needs" in human.stdout


def test_decide_input_exit_codes(tmp_path):
    """All decided: 0; missing input: 1; unreadable file in a directory: 1; --appointment with --input: 1."""
    good = _capture(tmp_path, line("a"), line("b"))
    assert cli("decide", "--bundle", SMALL, "--input", good).returncode == 0
    missing = cli("decide", "--bundle", SMALL, "--input", tmp_path / "missing.jsonl")
    assert missing.returncode == 1
    assert "cannot read input" in missing.stderr
    folder = tmp_path / "dir"
    folder.mkdir()
    (folder / "x.jsonl").symlink_to(tmp_path / "nowhere")
    assert cli("decide", "--bundle", SMALL, "--input", folder).returncode == 1
    both = cli("decide", "--bundle", SMALL, "--input", good, "--appointment", good)
    assert both.returncode == 1


def test_diff_input_json_contract_and_fail_on_change(tmp_path, small_copy):
    """Groups by transition with count, share and every request id; --fail-on-change exits 4."""
    edit(small_copy / "data/settings.yaml", "fee_window: 2h", "fee_window: 3h")
    path = _capture(
        tmp_path,
        *(line(f"edge-{i}", **visit("2026-03-10T14:00:01Z")) for i in range(3)),
        line("far", **visit("2026-03-10T18:00:00Z")),
    )
    proc = cli("diff", SMALL, small_copy, "--input", path, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["old"]["digest"] != doc["new"]["digest"]
    assert (doc["inputs"], doc["errors"], doc["changed"]) == (4, 0, 3)
    (group,) = doc["groups"]
    assert group["before"] == {"outcome": "ALLOW", "reasons": ["OPEN"], "follow_ups": ["REFUND"]}
    assert group["after"] == {"outcome": "ALLOW", "reasons": ["OPEN"], "follow_ups": ["FEE"]}
    assert (group["count"], group["share"], group["request_ids"]) == (3, 0.75, ["edge-0", "edge-1", "edge-2"])
    assert "inputs/s;" in proc.stderr
    assert "per CPU second" in proc.stderr
    assert cli("diff", SMALL, small_copy, "--input", path, "--fail-on-change").returncode == 4
    text = cli("diff", SMALL, small_copy, "--input", path, "--format", "markdown", "--examples", "2").stdout
    assert "3 of 4 requests change (75.00%)" in text
    assert "edge-0 edge-1 (+1)" in text


def test_diff_input_bad_input(tmp_path, small_copy):
    """Malformed lines are named by number and exit 3; a missing input exits 1; a bundle that does not load 3."""
    path = _capture(tmp_path, line("a"), "[]", line("b"), '{"action": "cancel_order", "order": 5}')
    proc = cli("diff", SMALL, SMALL, "--input", path)
    assert proc.returncode == 3
    assert f"error: {path}:2: expected a JSON object, got an array" in proc.stderr
    assert f"error: {path}:4: `order`: expected an object, got a number" in proc.stderr
    assert "0 of 2 requests change" in proc.stdout
    assert "2 input errors" in proc.stdout
    assert cli("diff", SMALL, SMALL, "--input", tmp_path / "none.jsonl").returncode == 1
    negative = cli("diff", SMALL, SMALL, "--input", path, "--examples", "-1")
    assert negative.returncode == 1
    assert "--examples must be 0 or more" in negative.stderr
    (small_copy / "data/catalogue.yaml").write_text("reasons: [\n")
    broken = cli("diff", SMALL, small_copy, "--input", path, "--format", "json")
    assert broken.returncode == 3
    assert json.loads(broken.stdout)["error"]["code"] == "bundle_invalid"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal():
    """On a terminal the bar shows share, count and rate and is cleared at the end; elsewhere nothing."""
    items = [SimpleNamespace(size=10) for _ in range(1024)]
    term = _Terminal()
    bar = Progress("diff", 10 * len(items), term)
    assert list(bar.track(items)) == items
    bar.update(5 * 1024, 512)  # throttled: at most five updates a second
    bar._last = 0.0
    bar.update(5 * 1024, 512)
    text = term.getvalue()
    assert "\rdiff [###############               ]  50% 512 inputs" in text
    assert "/s" in text
    bar.close()
    assert term.getvalue().endswith("\r" + " " * 79 + "\r")
    quiet = io.StringIO()
    bar = Progress("diff", 100, quiet)
    assert list(bar.track(items)) == items
    bar.update(50, 1)
    bar.close()
    assert quiet.getvalue() == ""


def test_serve_refuses_a_capture_sample_outside_0_1():
    """`serve --capture-sample 0` (or above 1) exits 1 before serving."""
    for rate in ("0", "1.5"):
        proc = cli("serve", "--bundle", SMALL, "--capture", "x.jsonl", "--capture-sample", rate, "--port", "0")
        assert proc.returncode == 1
        assert "--capture-sample must be in (0, 1]" in proc.stderr
