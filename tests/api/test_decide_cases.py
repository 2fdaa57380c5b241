"""Every test case of the default bundle through Decide, DecideBatch and DecideStream.

The server's answer must be the core's own decision for the same snapshot (or the
same invalid field), whether the order arrives as Junction's JSON or typed.
"""

from __future__ import annotations

import grpc
import pytest

from server._gen.orderpolicy.v1 import order_policy_pb2 as pb
from server.errors import SnapshotError
from tests.support.api import (
    bundle_cases,
    expected_field,
    model_key,
    proto_key,
    request_for,
    violations,
)

pytestmark = pytest.mark.integration

# A case whose `now` has no offset cannot be sent: a Timestamp always has one.
CASES = [c for c in bundle_cases() if request_for(c, typed=False) is not None]
TYPED_CASES = [c for c in CASES if request_for(c, typed=True) is not None]


def _core(policy, case):
    """("decision", key) or ("error", field) from the core for the case's snapshot."""
    try:
        return ("decision", model_key(policy.decide(case.snapshot)))
    except SnapshotError as exc:
        return ("error", exc.field)


def _check_expect(case, answer) -> None:
    """The core agrees with the case's own expectation (guards the comparison itself)."""
    expect = case.expect
    if "error" in expect:
        assert answer[0] == "error", case.name
        if expect["error"].get("field"):
            assert answer[1] == expect["error"]["field"], case.name
        return
    assert answer[0] == "decision", case.name
    key = answer[1]
    if "outcome" in expect:
        assert key[0] == expect["outcome"], case.name
    if "reasons" in expect:
        assert sorted(r[0] for r in key[1]) == sorted(expect["reasons"]), case.name
    if "follow_ups" in expect:
        assert sorted(f[0] for f in key[2]) == sorted(expect["follow_ups"]), case.name


def _answer_from_result(result):
    """The comparable answer of a DecideResult/DecideStreamResponse."""
    if result.WhichOneof("result") == "decision":
        return ("decision", proto_key(result.decision))
    assert result.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert result.error.reason == "request_invalid"
    assert len(result.error.field_violations) == 1
    return ("error", result.error.field_violations[0].field)


def _expected_answer(policy, case, request):
    kind, value = _core(policy, case)
    if kind == "error":
        return (kind, expected_field(value, request))
    return (kind, value)


def test_the_bundle_has_cases_and_most_are_typeable() -> None:
    """The comparison is not vacuous: many cases, nearly all expressible typed."""
    assert len(CASES) >= 50
    assert len(TYPED_CASES) >= 0.8 * len(CASES)
    unsendable = [c for c in bundle_cases() if c not in CASES]
    assert all(c.expect.get("error", {}).get("field") == "now" for c in unsendable), [c.name for c in unsendable]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decide_json_gives_the_core_decision(stub, policy, case) -> None:
    """Decide with Junction's JSON answers exactly what the core decides."""
    _check_expect(case, _core(policy, case))
    request = request_for(case, typed=False, request_id="rid-1")
    expected = _expected_answer(policy, case, request)
    try:
        response = stub.Decide(request, timeout=10)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.details()
        assert expected[0] == "error", exc.details()
        assert [f for f, _ in violations(exc)] == [expected[1]]
        return
    assert response.request_id == "rid-1"
    assert ("decision", proto_key(response.decision)) == expected
    assert len(response.decision.decision_id) >= 16


@pytest.mark.parametrize("case", TYPED_CASES, ids=[c.name for c in TYPED_CASES])
def test_decide_typed_gives_the_json_decision(stub, policy, case) -> None:
    """A typed Order/Appointment gets the same decision (or invalid field) as its JSON."""
    request = request_for(case, typed=True)
    expected = _expected_answer(policy, case, request)
    try:
        response = stub.Decide(request, timeout=10)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.details()
        assert [f for f, _ in violations(exc)] == [expected[1]]
        return
    assert ("decision", proto_key(response.decision)) == expected


def _all_requests() -> list[tuple[object, bool, pb.DecideRequest]]:
    out = []
    for i, case in enumerate(CASES):
        out.append((case, False, request_for(case, typed=False, request_id=f"json-{i}")))
        typed = request_for(case, typed=True, request_id=f"typed-{i}")
        if typed is not None:
            out.append((case, True, typed))
    return out


def test_decide_batch_answers_every_case_in_order(stub, policy) -> None:
    """DecideBatch answers each case with its own decision or error, in request order."""
    items = _all_requests()
    for start in range(0, len(items), 500):
        chunk = items[start : start + 500]
        response = stub.DecideBatch(pb.DecideBatchRequest(requests=[r for _, _, r in chunk]), timeout=60)
        assert [r.request_id for r in response.results] == [r.request_id for _, _, r in chunk]
        for (case, _, request), result in zip(chunk, response.results, strict=True):
            assert _answer_from_result(result) == _expected_answer(policy, case, request), case.name


def test_decide_stream_echoes_request_ids_with_each_answer(stub, policy) -> None:
    """DecideStream answers every case in order, each response carrying its request_id."""
    items = _all_requests()
    responses = list(stub.DecideStream(iter([pb.DecideStreamRequest(request=r) for _, _, r in items]), timeout=60))
    assert [r.request_id for r in responses] == [r.request_id for _, _, r in items]
    for (case, _, request), response in zip(items, responses, strict=True):
        assert _answer_from_result(response) == _expected_answer(policy, case, request), case.name


@pytest.mark.parametrize("case", CASES[:20], ids=[c.name for c in CASES[:20]])
def test_explanation_is_the_cores_facts_and_rules(stub, policy, case) -> None:
    """With explain, the decision carries the core's facts and matched rules."""
    from google.protobuf import json_format

    try:
        decision = policy.decide(case.snapshot)
    except SnapshotError:
        pytest.skip("an invalid snapshot has no explanation")
    request = request_for(case, typed=False)
    request.explain = True
    response = stub.Decide(request, timeout=10)
    explanation = response.decision.explanation
    assert list(explanation.matched_rules) == list(decision.matched_rules)
    facts = json_format.MessageToDict(explanation.facts)
    assert sorted(facts) == sorted(decision.facts)
    for name, value in decision.facts.items():
        if isinstance(value, bool) or value is None or isinstance(value, str):
            assert facts[name] == value, name
        else:
            assert facts[name] == pytest.approx(value), name
    plain = stub.Decide(request_for(case, typed=False), timeout=10)
    assert not plain.decision.HasField("explanation")
