"""Bundle cases (`order-policy test`): the fixture bundle's and every live bundle's own cases.

A live bundle under ``rules/`` is only ever checked against its own cases and its own
vocabulary and catalogue: every expectation here comes from the bundle, so a policy
owner who changes it and updates its cases keeps this green.
"""

from __future__ import annotations

import pytest

from server.cases import load_cases, run_case
from server.registry import build_decider
from tests.support.bundles import FIXTURE_BUNDLE, LIVE_BUNDLES, ROOT

BUNDLES = [FIXTURE_BUNDLE, *LIVE_BUNDLES]
CASES = [(bundle, case) for bundle in BUNDLES for case in load_cases(bundle)]


def _bundle_id(bundle) -> str:
    return str(bundle.relative_to(ROOT))


@pytest.fixture(scope="module")
def deciders():
    made = {bundle: build_decider(bundle) for bundle in BUNDLES}
    yield made
    for decider in made.values():
        decider.close()


@pytest.mark.parametrize(("bundle", "case"), CASES, ids=[f"{_bundle_id(b)}::{c.name}" for b, c in CASES])
def test_bundle_case(deciders, bundle, case):
    """Each case of a bundle's tests/ decides as it expects."""
    result = run_case(deciders[bundle], case)
    assert result.differences == [], f"{case.location}: {result.differences}"


@pytest.mark.parametrize("bundle", BUNDLES, ids=_bundle_id)
def test_every_status_of_every_method_has_a_cancel_order_case(deciders, bundle):
    """Every status string of the vocabulary (aliases too) appears as the detailed status of some case."""
    decider = deciders[bundle]
    seen = set()
    for case in load_cases(bundle):
        if case.action != "cancel_order" or case.order_json is not None or case.expect.get("error"):
            continue
        facts = decider.facts(case.snapshot)
        if facts.values["status_received"]:
            seen.add(facts.values["status_received"])
    missing = sorted(set(decider.bundle.vocabulary.all_statuses()) - seen)
    assert missing == []


@pytest.mark.parametrize("bundle", BUNDLES, ids=_bundle_id)
def test_every_reason_and_follow_up_of_the_catalogue_is_expected_by_some_case(deciders, bundle):
    """Every code of the bundle's catalogue appears in at least one of its cases' expectations."""
    cases = load_cases(bundle)
    reasons = {c for case in cases for c in case.expect.get("reasons", [])}
    follow_ups = {c for case in cases for c in case.expect.get("follow_ups", [])}
    catalogue = deciders[bundle].bundle
    defaults = {policy.default_reason for policy in catalogue.policies.values()}
    assert sorted(set(catalogue.reasons) - reasons - defaults) == []
    assert sorted(set(catalogue.follow_ups) - follow_ups) == []


def test_a_case_can_assert_follow_up_messages_and_paths(tmp_path):
    """`follow_up_messages` and `paths` are compared like reasons: a wrong one fails the case."""
    from tests.support.bundles import copy_bundle, edit_yaml

    bundle = copy_bundle(tmp_path / "bundle")
    decider = build_decider(bundle)
    try:
        case = next(c for c in load_cases(bundle) if "CANCEL_PSC_APPOINTMENT" in c.expect.get("follow_ups", []))
        decision = decider.decide(case.snapshot)
        messages = [f.message for f in decision.follow_ups]
        paths = [f.path for f in decision.follow_ups if f.path]
    finally:
        decider.close()
    assert paths, "the PSC follow-up names its endpoint"

    def expect(follow_up_messages: list[str], case_paths: list[str]) -> list[str]:
        def change(doc):
            for raw in doc["cases"]:
                if raw["name"] == case.name:
                    raw["expect"]["follow_up_messages"] = follow_up_messages
                    raw["expect"]["paths"] = case_paths

        edit_yaml(bundle / case.location.file, change)
        fresh = build_decider(bundle)
        try:
            [again] = [c for c in load_cases(bundle) if c.name == case.name]
            return run_case(fresh, again).differences
        finally:
            fresh.close()

    assert expect(messages, paths) == []
    wrong = expect([*messages[:-1], messages[-1] + " (edited)"], [p.replace("/v3/", "/v2/") for p in paths])
    assert [d.split(":")[0] for d in wrong] == ["follow_up_messages", "paths"]
