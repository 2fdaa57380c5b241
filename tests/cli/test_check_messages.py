"""`order-policy check` speaks to policy owners: every file's errors, plain YAML
explanations, rules and cases named, exact lines, what is allowed, did you mean,
contradicting conditions, suspect vocabulary entries, case files, warnings."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest

from server.cli import main
from tests.support.bundles import edit_yaml


def check(bundle: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = main(["check", str(bundle), "--format", "json"])
    return code, json.loads(capsys.readouterr().out)


def line_of(path: Path, text: str) -> int:
    """The 1-based line of ``path`` that contains ``text`` (the test's own edit)."""
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def replace_once(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) >= 1, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_yaml_errors_of_every_file_are_reported_with_a_plain_explanation_and_the_line(bundle_copy, capsys):
    """Two broken files: both reported, each with the parser's words explained and the line shown."""
    replace_once(bundle_copy / "data/catalogue.yaml", "reasons:\n", 'reasons:\n  BROKEN: "unclosed\n')
    policy = bundle_copy / "policies/cancel_appointment.yaml"
    replace_once(policy, "rules:\n", "rules:\n  - id: x\n   effect: deny\n")
    code, out = check(bundle_copy, capsys)
    assert code == 3
    by_file = {e["file"]: e for e in out["errors"] if e["code"] == "bundle_parse_error"}
    assert set(by_file) == {"data/catalogue.yaml", "policies/cancel_appointment.yaml"}
    indent = by_file["policies/cancel_appointment.yaml"]
    assert indent["message"].startswith("invalid YAML: a list item or key is indented differently")
    assert "(the parser says: did not find expected '-' indicator)" in indent["message"]
    assert indent["line"] == line_of(policy, "   effect: deny")
    assert indent["hint"] == f"line {indent['line']}: `effect: deny`"


def test_schema_errors_name_the_rule_the_line_what_is_allowed_and_the_likely_key(bundle_copy, capsys):
    """A misspelt effect value, operator and key, and a rule key indented into `when`."""
    policy = bundle_copy / "policies/cancel_order.yaml"
    replace_once(policy, "    effect: deny\n", "    effect: denied\n")
    replace_once(
        policy, "        - status_low: {in_set: terminal_low}\n", "        - status_low: {inset: terminal_low}\n"
    )
    replace_once(
        policy, "  - id: walk_in_cancellable\n    effect: allow\n", "  - id: walk_in_cancellable\n    efect: allow\n"
    )
    replace_once(
        policy,
        "          - collecting_sample.walk_in_test.appointment_pending\n    reasons:",
        "          - collecting_sample.walk_in_test.appointment_pending\n      reasons:",
    )
    code, out = check(bundle_copy, capsys)
    assert code == 3
    got = {(e["line"], e["message"], e.get("hint", "")) for e in out["errors"]}
    assert (
        line_of(policy, "effect: denied"),
        "rule `terminal_state`: `effect` is `denied`, which is not allowed here; allowed: `allow`, `deny`, "
        "`advise`, `invalid`",
        "did you mean `deny`?",
    ) in got
    assert (
        line_of(policy, "{inset: terminal_low}"),
        "rule `terminal_state`: unknown operator `inset` in the condition on `status_low`; allowed: `exists`, "
        "`gt`, `gte`, `in`, `in_set`, `lt`, `lte`, `not_in`, `not_in_set`",
        "did you mean `in_set`?",
    ) in got
    assert any(
        line == line_of(policy, "efect: allow")
        and msg.startswith("rule `walk_in_cancellable`: unknown field `efect`; allowed: `id`, `description`, `effect`")
        and hint == "did you mean `effect`?"
        for line, msg, hint in got
    )
    assert (
        line_of(policy, "      reasons: [CANCELLABLE_STATE]"),
        "rule `walk_in_cancellable`: `reasons` is inside `when`, where only conditions go (`fact: value`)",
        "`reasons` belongs to the rule: indent it like `when`, not under it",
    ) in got
    assert not any("is not valid under any of the given schemas" in msg for _, msg, _ in got)


def test_a_wrong_type_says_what_is_expected(bundle_copy, capsys):
    """`reasons: CODE` instead of a list: the rule, the field and the expected form."""
    policy = bundle_copy / "policies/cancel_order.yaml"
    replace_once(policy, "    reasons: [TERMINAL_STATE]\n", "    reasons: TERMINAL_STATE\n")
    _, out = check(bundle_copy, capsys)
    assert [e["message"] for e in out["errors"]] == [
        "rule `terminal_state`: `reasons` must be a list (`[a, b]` or `- item` lines), not `TERMINAL_STATE`"
    ]
    assert out["errors"][0]["line"] == line_of(policy, "reasons: TERMINAL_STATE")


def test_a_misspelt_vocabulary_status_is_reported_at_the_vocabulary_entry(bundle_copy, capsys):
    """The vocabulary misspells a status the rules spell right: the entry is the suspect."""
    vocabulary = bundle_copy / "data/vocabulary.yaml"
    replace_once(vocabulary, "received.walk_in_test.requisition_bypassed", "received.walk_in_test.requisiton_bypassed")
    code, out = check(bundle_copy, capsys)
    assert code == 3
    suspect = [e for e in out["errors"] if e["code"] == "validation_suspect_status"]
    assert len(suspect) == 1
    assert (suspect[0]["file"], suspect[0]["line"]) == (
        "data/vocabulary.yaml",
        line_of(vocabulary, "requisiton_bypassed"),
    )
    assert suspect[0]["message"].startswith(
        "status `received.walk_in_test.requisiton_bypassed` may be misspelt: "
        "rules name `received.walk_in_test.requisition_bypassed` (policies/"
    )
    at_rule = [e for e in out["errors"] if e["code"] == "validation_unknown_status"]
    assert at_rule
    assert all(f"data/vocabulary.yaml:{suspect[0]['line']}) is misspelt" in e["hint"] for e in at_rule)


def test_a_misspelt_rule_status_is_not_blamed_on_the_vocabulary(bundle_copy, capsys):
    """The rule misspells a status the vocabulary spells right: only the rule is reported."""
    replace_once(
        bundle_copy / "policies/cancel_order.yaml", "- received.walk_in_test.ordered", "- received.walk_in_test.orderd"
    )
    _, out = check(bundle_copy, capsys)
    assert [(e["code"], e["hint"]) for e in out["errors"] if e["code"].startswith("validation_")] == [
        ("validation_unknown_status", "did you mean `received.walk_in_test.ordered`?")
    ]


def test_case_files_are_checked_outcome_codes_rules_and_fields(bundle_copy, capsys):
    """`outcome: ALOW`, an unknown field, an unknown reason code and rule id in the cases."""
    cases = bundle_copy / "tests/top_status.yaml"
    replace_once(cases, "outcome: ALLOW", "outcome: ALOW")
    code, out = check(bundle_copy, capsys)
    assert code == 3
    [error] = out["errors"]
    assert (error["file"], error["line"]) == ("tests/top_status.yaml", line_of(cases, "outcome: ALOW"))
    assert re.fullmatch(
        r"case `.+`: `expect\.outcome` is `ALOW`, which is not allowed here; allowed: `ALLOW`, "
        r"`DENY`",
        error["message"],
    )
    assert error["hint"] == "did you mean `ALLOW`?"

    replace_once(cases, "outcome: ALOW", "outcome: ALLOW")
    other = bundle_copy / "tests/refunds.yaml"

    def change(doc: dict[str, Any]) -> None:
        doc["cases"][0]["expect"]["reasons"] = ["CANCELABLE_STATE"]
        doc["cases"][1]["expect"]["rules"] = ["at_home_appointment_ful_refund"]
        doc["cases"][2]["expected"] = {"outcome": "ALLOW"}

    edit_yaml(other, change)
    _, out = check(bundle_copy, capsys)
    got = {(e["code"], e.get("hint", "")) for e in out["errors"]}
    assert ("validation_unknown_field", "did you mean `expect`?") in got

    def undo(doc: dict[str, Any]) -> None:
        del doc["cases"][2]["expected"]

    edit_yaml(other, undo)
    _, out = check(bundle_copy, capsys)
    got = {(e["code"], e.get("hint", "")) for e in out["errors"]}
    assert got == {
        ("validation_unknown_reason", "did you mean `CANCELLABLE_STATE`?"),
        ("validation_unknown_rule", "did you mean `at_home_appointment_full_refund`?"),
    }


def test_an_allow_rule_shadowed_for_every_status_it_names_is_a_warning(bundle_copy, capsys):
    """Allowing only terminal statuses passes silently otherwise: deny overrides it."""
    policy = bundle_copy / "policies/cancel_order.yaml"

    def change(doc: dict[str, Any]) -> None:
        doc["rules"].append(
            {
                "id": "allow_completed",
                "effect": "allow",
                "when": {"status": {"in": ["completed.walk_in_test.completed"]}},
                "reasons": ["CANCELLABLE_STATE"],
            }
        )

    edit_yaml(policy, change)
    code, out = check(bundle_copy, capsys)
    assert code == 0
    assert out["valid"] is True
    assert [(w["code"], w["message"]) for w in out["warnings"]] == [
        (
            "warning_shadowed_allow",
            "allow rule `allow_completed` can never allow: deny rule `terminal_state` also matches every status it "
            "names, and deny overrides allow",
        )
    ]
    assert out["warnings"][0]["line"] == line_of(policy, "id: allow_completed")
    main(["check", str(bundle_copy)])
    assert "warning[warning_shadowed_allow]" in capsys.readouterr().out


def test_the_calendar_ending_within_12_months_is_a_warning_naming_the_setting(bundle_copy, capsys):
    """Holidays listed only up to next year: a warning, and check still passes."""
    settings = bundle_copy / "data/settings.yaml"
    last = dt.date.today().year  # its 31 December is always less than 12 months away

    def change(doc: dict[str, Any]) -> None:
        for calendar in doc["calendars"].values():
            calendar["holidays"] = [h for h in calendar["holidays"] if int(h["date"][:4]) <= last]

    edit_yaml(settings, change)
    code, out = check(bundle_copy, capsys)
    assert code == 0
    [warning] = out["warnings"]
    assert warning["code"] == "warning_calendar_ends"
    assert warning["message"].startswith(f"the business-day calendar ends on {last}-12-31, within 12 months")
    assert warning["hint"] == "add the next year's holidays to `calendars.us_federal.holidays`"
    assert warning["file"] == "data/settings.yaml"
