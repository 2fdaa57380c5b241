"""Fuzzing the gRPC surface: arbitrary messages, field values and wire bytes always get a
decision or a clean status (INVALID_ARGUMENT, FAILED_PRECONDITION), never INTERNAL or UNKNOWN.

A short run is part of ``make test``; ``make fuzz`` runs these with many more examples.
"""

from __future__ import annotations

import json

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server._gen.orderpolicy.v1 import order_policy_pb2 as pb
from tests.support.fuzz import examples

pytestmark = [pytest.mark.integration, pytest.mark.fuzz]

CLEAN = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION}
SERVICE = "/orderpolicy.v1.OrderPolicyService/"
FUZZ = settings(
    max_examples=examples(60),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

words = st.sampled_from(
    [
        "",
        "received",
        "cancelled",
        "collecting_sample",
        "walk_in_test",
        "testkit",
        "at_home_phlebotomy",
        "received.walk_in_test.ordered",
        "confirmed",
        "pending",
        "sonora_quest",
        "getlabs",
        "x.y",
        "Bad Status",
    ]
) | st.text(max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | words,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(words, children, max_size=5),
    max_leaves=25,
)
order_docs = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "status": json_values,
        "created_at": json_values | st.just("2026-03-09T14:03:12+00:00"),
        "details": st.fixed_dictionaries({}, optional={"type": json_values}) | json_values,
        "lab_test": st.fixed_dictionaries({}, optional={"method": json_values}),
        "events": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "id": json_values,
                    "created_at": st.just("2026-03-09T14:03:12+00:00") | json_values,
                    "status": json_values,
                },
            ),
            max_size=3,
        )
        | json_values,
        "last_event": json_values,
        "extra": json_values,
    },
)
json_texts = (
    order_docs.map(json.dumps)
    | json_values.map(json.dumps)
    | st.text(max_size=60)
    | st.sampled_from(
        [
            '{"id": "o", "id": "p"}',
            "[" * 300 + "]" * 300,
            '{"a": ' + "[" * 1100 + "]" * 1100 + "}",
            '{"id": 1e999}',
            '{"id": "\\ud800"}',
            "\ufeff{}",
            "{}" * 3,
        ]
    )
)


@st.composite
def timestamps(draw: st.DrawFn) -> object:
    from google.protobuf import timestamp_pb2

    return timestamp_pb2.Timestamp(
        seconds=draw(st.integers(-(2**63), 2**63 - 1) | st.integers(0, 2_000_000_000)),
        nanos=draw(st.integers(-(2**31), 2**31 - 1) | st.just(0)),
    )


@st.composite
def events(draw: st.DrawFn) -> pb.OrderEvent:
    event = pb.OrderEvent(id=draw(st.integers(-(2**63), 2**63 - 1)), status=draw(words))
    if draw(st.booleans()):
        event.created_at.CopyFrom(draw(timestamps()))
    return event


@st.composite
def requests(draw: st.DrawFn) -> pb.DecideRequest:
    """Any DecideRequest: any action number, JSON or typed inputs with any values, any `now`."""
    request = pb.DecideRequest(
        action=draw(st.integers(-5, 5) | st.integers(-(2**31), 2**31 - 1)),
        request_id=draw(st.text(max_size=8)),
        explain=draw(st.booleans()),
        bundle_revision=draw(st.just("") | st.text(max_size=8)),
    )
    which = draw(st.sampled_from(["json", "typed", "none"]))
    if which == "json":
        request.order_json = draw(json_texts)
    elif which == "typed":
        order = pb.Order(
            id=draw(words),
            status=draw(words),
            details_type=draw(words),
            lab_test_method=draw(words),
            events=draw(st.lists(events(), max_size=3)),
        )
        if draw(st.booleans()):
            order.created_at.CopyFrom(draw(timestamps()))
        if draw(st.booleans()):
            order.last_event.CopyFrom(draw(events()))
        request.order.CopyFrom(order)
    appointment = draw(st.sampled_from(["json", "typed", "none"]))
    if appointment == "json":
        request.appointment_json = draw(json_texts)
    elif appointment == "typed":
        appt = pb.Appointment(
            id=draw(words), order_id=draw(words), status=draw(words), provider=draw(words), type=draw(words)
        )
        if draw(st.booleans()):
            appt.start_at.CopyFrom(draw(timestamps()))
        request.appointment.CopyFrom(appt)
    if draw(st.booleans()):
        request.now.CopyFrom(draw(timestamps()))
    return request


def _clean(error: grpc.RpcError) -> None:
    assert error.code() in CLEAN, f"{error.code()}: {error.details()}"


def _check_result(result: object) -> None:
    which = result.WhichOneof("result")  # type: ignore[attr-defined]
    assert which in ("decision", "error")
    if which == "error":
        assert (
            grpc.StatusCode.INVALID_ARGUMENT.value[0] == result.error.code
            or grpc.StatusCode.FAILED_PRECONDITION.value[0] == result.error.code
        ), result.error  # type: ignore[attr-defined]


@FUZZ
@given(request=requests())
def test_any_decide_request_gets_a_decision_or_a_clean_status(stub, request: pb.DecideRequest) -> None:
    """Decide: a decision (with outcome and reasons) or INVALID_ARGUMENT / FAILED_PRECONDITION."""
    try:
        reply = stub.Decide(request, timeout=30)
    except grpc.RpcError as exc:
        _clean(exc)
        return
    assert reply.decision.outcome in (pb.OUTCOME_ALLOW, pb.OUTCOME_DENY)
    assert reply.decision.reasons


@FUZZ
@given(batch=st.lists(requests(), max_size=5))
def test_any_batch_and_stream_answer_every_item_cleanly(stub, batch: list[pb.DecideRequest]) -> None:
    """DecideBatch and DecideStream: one decision or clean error per item, in order."""
    try:
        results = stub.DecideBatch(pb.DecideBatchRequest(requests=batch), timeout=30).results
    except grpc.RpcError as exc:
        _clean(exc)
    else:
        assert len(results) == len(batch)
        for result in results:
            _check_result(result)
    replies = list(stub.DecideStream(iter([pb.DecideStreamRequest(request=r) for r in batch]), timeout=30))
    assert len(replies) == len(batch)
    for reply in replies:
        _check_result(reply)


@FUZZ
@given(data=st.binary(max_size=200), base=requests(), flips=st.lists(st.integers(0, 10_000), max_size=4))
def test_any_wire_bytes_get_a_decision_or_a_clean_status(
    channel, data: bytes, base: pb.DecideRequest, flips: list[int]
) -> None:
    """Random bytes, and valid messages with flipped bytes, sent as a DecideRequest: never INTERNAL."""
    mutated = bytearray(base.SerializeToString())
    for flip in flips:
        if mutated:
            mutated[flip % len(mutated)] ^= 0xFF
    call = channel.unary_unary(
        SERVICE + "Decide", request_serializer=None, response_deserializer=pb.DecideResponse.FromString
    )
    for body in (data, bytes(mutated)):
        try:
            call(body, timeout=30)
        except grpc.RpcError as exc:
            _clean(exc)
