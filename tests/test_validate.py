"""Loading and validation: every error collected, each with a stable code, file, line and hint."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.bundle import load_bundle
from server.decide import Decider
from server.errors import ErrorList
from server.registry import build_decider
from server.validate import coverage_errors, validate
from tests.support.bundles import edit_yaml


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def errors_of(bundle: Path) -> list:
    try:
        build_decider(bundle)
    except ErrorList as exc:
        return exc.errors
    return []


def test_the_default_bundle_is_valid_and_covered(fixture_bundle):
    """The shipped bundle has no validation or coverage error."""
    bundle = load_bundle(fixture_bundle)
    assert validate(bundle) == []
    decider = Decider(bundle)
    assert coverage_errors(bundle, decider) == []
    decider.close()


def test_misspelt_key_names_the_line_and_suggests_the_key(bundle_copy):
    """An unknown field is `validation_unknown_field` with file, line and "did you mean"."""
    policy = bundle_copy / "policies/cancel_order.yaml"
    edit(policy, "    reasons: [TERMINAL_STATE]", "    reasonz: [TERMINAL_STATE]")
    errs = errors_of(bundle_copy)
    assert [e.code for e in errs] == ["validation_unknown_field"]
    line = next(i for i, l in enumerate(policy.read_text().splitlines(), 1) if "reasonz" in l)
    assert (errs[0].location.file, errs[0].location.line) == ("policies/cancel_order.yaml", line)
    assert errs[0].hint == "did you mean `reasons`?"
    assert "`reasonz`" in errs[0].message


def test_yaml_syntax_error_names_the_line(bundle_copy):
    """A YAML syntax error is `bundle_parse_error` at its line."""
    (bundle_copy / "data/catalogue.yaml").write_text("reasons:\n  A: [unclosed\n")
    errs = errors_of(bundle_copy)
    assert [e.code for e in errs] == ["bundle_parse_error"]
    assert errs[0].location.file == "data/catalogue.yaml"
    assert errs[0].location.line >= 2


def test_every_error_is_collected_not_only_the_first(bundle_copy):
    """Several problems in several files are reported together, sorted by file and line."""
    policy = bundle_copy / "policies/cancel_order.yaml"
    edit(policy, "reasons: [TESTKIT_SHIPPED]", "reasons: [TESTKIT_SHIPED]")
    edit(
        policy,
        "      status_source: top\n      top_status: received",
        "      status_sorce: top\n      top_status: received",
    )
    edit(policy, "- id: walk_in_cancellable", "- id: terminal_state")
    edit(
        bundle_copy / "policies/cancel_appointment.yaml",
        "appointment_status: in_progress",
        "appointment_status: in_progres",
    )
    errs = errors_of(bundle_copy)
    got = {(e.code, e.hint) for e in errs}
    assert ("validation_unknown_reason", "did you mean `TESTKIT_SHIPPED`?") in got
    assert ("validation_unknown_fact", "did you mean `status_source`?") in got
    assert ("validation_unknown_appointment_status", "did you mean `in_progress`?") in got
    assert "validation_duplicate_rule" in {e.code for e in errs}
    keys = [(e.location.file, e.location.line) for e in errs]
    assert keys == sorted(keys)
    assert all(e.location.line > 0 for e in errs)


def test_unknown_status_and_method_values_are_errors_with_hints(bundle_copy):
    """A rule naming a status or method the vocabulary does not define is refused."""
    policy = bundle_copy / "policies/cancel_order.yaml"
    edit(policy, "- received.walk_in_test.ordered", "- received.walk_in_test.orderd")
    edit(
        policy,
        "method: at_home_phlebotomy\n      appointment_status: {in_set: active_appointment}\n    follow_ups: [APPOINTMENT_AUTO_CANCELLED]",
        "method: at_home_phlebotomey\n      appointment_status: {in_set: active_appointment}\n    follow_ups: [APPOINTMENT_AUTO_CANCELLED]",
    )
    errs = errors_of(bundle_copy)
    got = {(e.code, e.hint) for e in errs}
    assert ("validation_unknown_status", "did you mean `received.walk_in_test.ordered`?") in got
    assert ("validation_unknown_method", "did you mean `at_home_phlebotomy`?") in got


def test_unknown_set_param_and_follow_up_are_errors(bundle_copy):
    """Sets, params and follow-ups are checked by name too."""
    policy = bundle_copy / "policies/cancel_order.yaml"
    edit(policy, "{in_set: terminal_high}", "{in_set: terminal_hihg}")
    edit(policy, "{gt: {param: refund_window}}", "{gt: {param: refund_windw}}")
    edit(policy, "follow_ups: [REFETCH_ORDER]", "follow_ups: [REFETCH]")
    codes = {e.code for e in errors_of(bundle_copy)}
    assert {"validation_unknown_set", "validation_unknown_param", "validation_unknown_follow-up"} <= codes


def test_a_rule_that_can_never_match_is_an_error(bundle_copy):
    """A status of one method required together with another method can never match; the
    error names both conditions."""
    policy = bundle_copy / "policies/cancel_order.yaml"
    edit(
        policy,
        "  - id: not_cancellable_state\n    effect: deny\n    when:\n",
        "  - id: not_cancellable_state\n    effect: deny\n    when:\n      method: on_site_collection\n",
    )
    errs = errors_of(bundle_copy)
    assert [(e.code, e.message) for e in errs] == [
        (
            "validation_never_matches",
            "rule `not_cancellable_state` can never match: `status: {in: [collecting_sample.walk_in_test."
            "redraw_available, sample_with_lab.testkit.lab_processing_blocked]}` contradicts "
            "`method: on_site_collection`",
        )
    ]


def test_contradictory_numeric_bounds_never_match(bundle_copy):
    """`gt 24h` and `lte 1h` together can never hold: the error quotes the condition."""
    policy = bundle_copy / "policies/cancel_order.yaml"
    edit(
        policy,
        "appointment_notice_seconds: {gt: {param: refund_window}}",
        "appointment_notice_seconds: {gt: {param: refund_window}, lte: 3600}",
    )
    errs = errors_of(bundle_copy)
    assert [e.code for e in errs] == ["validation_never_matches"]
    assert errs[0].message == (
        "rule `at_home_full_refund` can never match: no value satisfies "
        "`appointment_notice_seconds: {gt: {param: refund_window}, lte: 3600}`"
    )


def test_conditions_in_separate_all_branches_that_contradict_are_both_named(bundle_copy):
    """Two conditions on one fact under `all` that exclude each other are both quoted."""

    def change(doc):
        rule = next(r for r in doc["rules"] if r["id"] == "not_cancellable_state")
        rule["when"] = {"all": [{"appointment_status": "confirmed"}, {"appointment_status": {"in": ["cancelled"]}}]}

    edit_yaml(bundle_copy / "policies/cancel_order.yaml", change)
    errs = [e for e in errors_of(bundle_copy) if e.code == "validation_never_matches"]
    assert [e.message for e in errs] == [
        "rule `not_cancellable_state` can never match: no value satisfies `appointment_status: confirmed` "
        "and `appointment_status: {in: [cancelled]}`"
    ]


def test_a_status_no_rule_decides_fails_the_coverage_check(bundle_copy):
    """Removing a status from the cancellable list leaves it to the default: coverage names it."""
    edit(bundle_copy / "policies/cancel_order.yaml", "          - received.walk_in_test.requisition_bypassed\n", "")
    errs = errors_of(bundle_copy)
    assert {e.code for e in errs} == {"validation_coverage"}
    assert any(
        "`received.walk_in_test.requisition_bypassed`" in e.message and "`cancel_order`" in e.message for e in errs
    )


def test_unknown_template_variable_is_an_error(bundle_copy):
    """A message template naming an unknown variable is refused with a hint."""
    edit(bundle_copy / "data/catalogue.yaml", "{current_status} to cancelled", "{curent_status} to cancelled")
    errs = errors_of(bundle_copy)
    assert {(e.code, e.hint) for e in errs} == {("validation_template", "did you mean `current_status`?")}


def test_vocabulary_status_under_the_wrong_method_is_an_error(bundle_copy):
    """A status listed under a method whose name its METHOD part does not carry is refused."""
    edit(
        bundle_copy / "data/vocabulary.yaml",
        "      - received.walk_in_test.ordered\n",
        "      - received.walk_in_test.ordered\n      - received.testkit.brand_new\n",
    )
    assert "validation_status_method" in {e.code for e in errors_of(bundle_copy)}


def test_unknown_time_zone_is_an_error(bundle_copy):
    """Settings are checked too: an unknown IANA zone is refused."""
    edit(bundle_copy / "data/settings.yaml", "America/New_York", "America/New_Yrok")
    assert [e.code for e in errors_of(bundle_copy)] == ["validation_unknown_time_zone"]


def test_missing_manifest_is_an_error(bundle_copy):
    """A bundle without its manifest is `bundle_missing_file`."""
    (bundle_copy / "manifest.yaml").unlink()
    assert [e.code for e in errors_of(bundle_copy)] == ["bundle_missing_file"]


def test_on_as_a_key_is_read_as_text_not_a_boolean(fixture_bundle):
    """YAML 1.1 reads `on:` as true; the loader keeps it the key `on`."""
    bundle = load_bundle(fixture_bundle)
    advise = [r for r in bundle.policies["cancel_order"].rules if r.effect == "advise"]
    assert {r.on for r in advise} == {"allow", "any"}


@pytest.mark.parametrize("kind", ["manifest", "vocabulary", "settings", "catalogue", "policy", "cases"])
def test_every_file_kind_ships_a_json_schema(kind):
    """Policy owners get a JSON Schema per file kind for their editor."""
    import json
    from importlib import resources

    text = resources.files("server.schemas").joinpath(f"{kind}.schema.json").read_text()
    assert json.loads(text)["$schema"].startswith("https://json-schema.org/")
