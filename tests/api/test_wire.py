"""Bytes protobuf refuses (invalid UTF-8 in a string field, garbage) answer INVALID_ARGUMENT
naming the field, counted; never gRPC's INTERNAL "Exception deserializing request!"."""

from __future__ import annotations

import json

import grpc
import pytest

from server._gen.orderpolicy.v1 import order_policy_pb2 as pb
from server.api.metrics import METRICS
from tests.support.api import error_reason, violations

pytestmark = pytest.mark.integration

ORDER = {
    "id": "o-1",
    "details": {"type": "walk_in_test"},
    "events": [{"id": 1, "created_at": "2026-03-09T14:03:12+00:00", "status": "received.walk_in_test.ordered"}],
}
SERVICE = "/orderpolicy.v1.OrderPolicyService/"
MARK = "\u0001" * 12  # stands for the invalid bytes, same length
BAD = b"\xff\xfe\xc3(\xa0\xa1\xe2\x28\xa1\xf0\x28\x8c"


def _raw(message: object) -> bytes:
    """The message's wire bytes with MARK replaced by bytes that are not UTF-8."""
    data = message.SerializeToString()  # type: ignore[attr-defined]
    assert data.count(MARK.encode()) == 1
    return data.replace(MARK.encode(), BAD)


def _request(**fields: object) -> pb.DecideRequest:
    return pb.DecideRequest(action=pb.ACTION_CANCEL_ORDER, **fields)


def _invalid_count() -> float:
    return METRICS.errors.labels("request_invalid")._value.get()


def _call(channel: grpc.Channel, method: str, data: bytes, response: object) -> object:
    return channel.unary_unary(SERVICE + method, request_serializer=None, response_deserializer=response.FromString)(
        data, timeout=10
    )  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (_request(order_json=MARK), "order_json"),
        (_request(order_json=json.dumps(ORDER), appointment_json=MARK), "appointment_json"),
        (_request(order_json=json.dumps(ORDER), request_id=MARK), "request_id"),
        (
            _request(order=pb.Order(id="o-1", events=[pb.OrderEvent(id=1), pb.OrderEvent(id=2, status=MARK)])),
            "order.events[1].status",
        ),
    ],
    ids=["order_json", "appointment_json", "request_id", "typed_event_status"],
)
def test_invalid_utf8_in_a_string_field_is_invalid_argument_naming_it(channel, request_, field) -> None:
    """Decide: INVALID_ARGUMENT, one field violation on the field, reason request_invalid, counted."""
    before = _invalid_count()
    with pytest.raises(grpc.RpcError) as info:
        _call(channel, "Decide", _raw(request_), pb.DecideResponse)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(info.value) == [(field, "is not valid UTF-8 text: a string field must hold UTF-8")]
    assert f"`{field}`" in info.value.details()
    assert error_reason(info.value) == "request_invalid"
    assert _invalid_count() == before + 1


def test_a_batch_names_the_item_and_a_stream_answers_the_item(channel) -> None:
    """DecideBatch fails as a whole naming `requests[1].order_json`; in DecideStream only the bad
    message gets an error (naming `order_json`), the others their decisions."""
    good = _request(order_json=json.dumps(ORDER))
    batch = pb.DecideBatchRequest(requests=[good, _request(order_json=MARK), good])
    with pytest.raises(grpc.RpcError) as info:
        _call(channel, "DecideBatch", _raw(batch), pb.DecideBatchResponse)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(info.value)[0][0] == "requests[1].order_json"

    messages = [
        pb.DecideStreamRequest(request=good).SerializeToString(),
        _raw(pb.DecideStreamRequest(request=_request(order_json=MARK))),
        pb.DecideStreamRequest(request=good).SerializeToString(),
    ]
    stream = channel.stream_stream(
        SERVICE + "DecideStream", request_serializer=None, response_deserializer=pb.DecideStreamResponse.FromString
    )
    replies = list(stream(iter(messages), timeout=10))
    assert [r.WhichOneof("result") for r in replies] == ["decision", "error", "decision"]
    error = replies[1].error
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT.value[0], "request_invalid")
    assert [v.field for v in error.field_violations] == ["order_json"]


@pytest.mark.parametrize(
    "data", [b"\xff\xff\xff", b"\x0a\x05ab", b"\x12\xff\xff\xff\xff\x0f"], ids=["bad_tag", "truncated", "huge_length"]
)
def test_bytes_that_are_no_message_are_invalid_argument_not_internal(channel, data: bytes) -> None:
    """Garbage that protobuf cannot decode at all: INVALID_ARGUMENT saying so, counted."""
    before = _invalid_count()
    with pytest.raises(grpc.RpcError) as info:
        _call(channel, "Decide", data, pb.DecideResponse)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid `orderpolicy.v1.DecideRequest` message" in info.value.details()
    assert _invalid_count() == before + 1
