"""The default bundle's own cases, one pytest case each (the same as `order-policy test`)."""

from __future__ import annotations

import pytest

from server.cases import load_cases, run_case
from server.registry import build_decider
from tests.conftest import DEFAULT_BUNDLE

CASES = load_cases(DEFAULT_BUNDLE)


@pytest.fixture(scope="module")
def decider():
    d = build_decider(DEFAULT_BUNDLE)
    yield d
    d.close()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bundle_case(decider, case):
    """Each case of rules/cancellation/tests decides as it expects."""
    result = run_case(decider, case)
    assert result.differences == [], f"{case.location}: {result.differences}"


def test_every_status_of_every_method_has_a_cancel_order_case(decider):
    """Every status string of the vocabulary (aliases too) appears as the detailed status of some case."""
    seen = set()
    for case in CASES:
        if case.action != "cancel_order" or case.order_json is not None or case.expect.get("error"):
            continue
        facts = decider.facts(case.snapshot)
        if facts.values["status_received"]:
            seen.add(facts.values["status_received"])
    missing = sorted(set(decider.bundle.vocabulary.all_statuses()) - seen)
    assert missing == []


def test_every_reason_and_follow_up_of_the_catalogue_is_expected_by_some_case(decider):
    """Every code of POLICY.md appears in at least one case's expectations."""
    reasons = {c for case in CASES for c in case.expect.get("reasons", [])}
    follow_ups = {c for case in CASES for c in case.expect.get("follow_ups", [])}
    catalogue = decider.bundle
    assert sorted(set(catalogue.reasons) - reasons - {"NO_MATCHING_RULE"}) == []
    assert sorted(set(catalogue.follow_ups) - follow_ups) == []
