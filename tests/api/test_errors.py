"""Invalid requests answer INVALID_ARGUMENT with field violations; nothing is INTERNAL."""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server._gen.orderpolicy.v1 import order_policy_pb2 as pb
from tests.support.api import error_reason, violations

pytestmark = pytest.mark.integration

ORDER = {
    "id": "ord-1",
    "created_at": "2026-03-09T14:03:12+00:00",
    "status": "received",
    "details": {"type": "walk_in_test"},
    "events": [{"id": 1, "created_at": "2026-03-09T14:03:12+00:00", "status": "received.walk_in_test.ordered"}],
}


def _json_request(order: object = ORDER, **kw: object) -> pb.DecideRequest:
    kw.setdefault("action", pb.ACTION_CANCEL_ORDER)
    return pb.DecideRequest(order_json=json.dumps(order), **kw)


def _fail(stub, request: pb.DecideRequest) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        stub.Decide(request, timeout=10)
    return info.value


def test_unspecified_action_names_the_action_field(stub) -> None:
    """ACTION_UNSPECIFIED is INVALID_ARGUMENT with a violation on `action`."""
    error = _fail(stub, _json_request(action=pb.ACTION_UNSPECIFIED))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in violations(error)] == ["action"]
    assert error_reason(error) == "request_invalid"


def test_unknown_action_number_is_invalid_not_internal(stub) -> None:
    """An enum number this server does not know is a violation on `action`."""
    error = _fail(stub, _json_request(action=42))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in violations(error)] == ["action"]


def test_missing_order_names_the_order(stub) -> None:
    """A request without order_json or order is a violation on `order`."""
    error = _fail(stub, pb.DecideRequest(action=pb.ACTION_CANCEL_ORDER))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in violations(error)] == ["order"]


@pytest.mark.parametrize("text", ["", "{", "[1, 2]", "null", '"order"', "1e999999"])
def test_order_json_that_is_not_an_object_names_order_json(stub, text: str) -> None:
    """Malformed order JSON is a violation on `order_json` itself."""
    error = _fail(stub, pb.DecideRequest(action=pb.ACTION_CANCEL_ORDER, order_json=text))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in violations(error)] == ["order_json"]


def test_appointment_json_that_is_not_an_object_names_appointment_json(stub) -> None:
    """Malformed appointment JSON is a violation on `appointment_json`."""
    error = _fail(stub, _json_request(appointment_json="[]"))
    assert [f for f, _ in violations(error)] == ["appointment_json"]


def test_json_snapshot_error_names_the_path_inside_order_json(stub) -> None:
    """A bad event status in JSON names `order_json.events[0].status`."""
    order = {**ORDER, "events": [{**ORDER["events"][0], "status": "Received"}]}
    error = _fail(stub, _json_request(order))
    assert [f for f, _ in violations(error)] == ["order_json.events[0].status"]
    assert "`order_json.events[0].status`" in error.details()


def test_typed_snapshot_error_names_the_typed_field(stub) -> None:
    """Typed input names the typed field (`order.details_type`), not Junction's path."""
    order = pb.Order(id="ord-1", details_type="walk_in_test", lab_test_method="testkit", status="received")
    error = _fail(stub, pb.DecideRequest(action=pb.ACTION_CANCEL_ORDER, order=order))
    fields = [f for f, _ in violations(error)]
    assert fields in (["order.lab_test_method"], ["order.details_type"])


def test_typed_event_without_id_names_the_event_id(stub) -> None:
    """A typed event with id 0 (absent) is a violation on `order.events[0].id`."""
    order = pb.Order(id="ord-1", details_type="testkit", events=[pb.OrderEvent(status="received.testkit.ordered")])
    order.events[0].created_at.FromSeconds(1_700_000_000)
    error = _fail(stub, pb.DecideRequest(action=pb.ACTION_CANCEL_ORDER, order=order))
    assert [f for f, _ in violations(error)] == ["order.events[0].id"]


def test_out_of_range_timestamp_names_the_field(stub) -> None:
    """A Timestamp beyond year 9999 is a violation on its field, not INTERNAL."""
    order = pb.Order(id="ord-1", details_type="testkit", status="received")
    order.created_at.seconds = 10**15
    error = _fail(stub, pb.DecideRequest(action=pb.ACTION_CANCEL_ORDER, order=order))
    assert [f for f, _ in violations(error)] == ["order.created_at"]
    request = _json_request()
    request.now.seconds = -(10**15)
    error = _fail(stub, request)
    assert [f for f, _ in violations(error)] == ["now"]


def test_unloaded_revision_pin_is_failed_precondition(stub) -> None:
    """bundle_revision naming a revision the server does not hold fails the precondition."""
    error = _fail(stub, _json_request(bundle_revision="no-such-revision"))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no-such-revision" in error.details()


def test_active_revision_pin_decides(stub, policy) -> None:
    """bundle_revision naming the active revision is decided by it."""
    response = stub.Decide(_json_request(bundle_revision=policy.ref.revision), timeout=10)
    assert response.decision.bundle.revision == policy.ref.revision


def test_batch_item_errors_do_not_fail_the_batch(stub) -> None:
    """One invalid item gets its own error; its neighbours get decisions."""
    requests = [
        _json_request(request_id="a"),
        _json_request(request_id="b", action=pb.ACTION_UNSPECIFIED),
        pb.DecideRequest(request_id="c", action=pb.ACTION_CANCEL_ORDER, order_json="{"),
        _json_request(request_id="d"),
    ]
    response = stub.DecideBatch(pb.DecideBatchRequest(requests=requests), timeout=10)
    kinds = [(r.request_id, r.WhichOneof("result")) for r in response.results]
    assert kinds == [("a", "decision"), ("b", "error"), ("c", "error"), ("d", "decision")]
    assert [v.field for v in response.results[1].error.field_violations] == ["action"]
    assert [v.field for v in response.results[2].error.field_violations] == ["order_json"]
    assert response.results[2].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]


def test_stream_item_errors_do_not_end_the_stream(stub) -> None:
    """An invalid stream message is answered with its error and the stream goes on."""
    messages = [
        pb.DecideStreamRequest(request=_json_request(request_id="a")),
        pb.DecideStreamRequest(),  # no request at all
        pb.DecideStreamRequest(request=_json_request(request_id="c")),
    ]
    responses = list(stub.DecideStream(iter(messages), timeout=10))
    assert [(r.request_id, r.WhichOneof("result")) for r in responses] == [
        ("a", "decision"),
        ("", "error"),
        ("c", "decision"),
    ]


def test_empty_batch_answers_empty(stub) -> None:
    """A batch of no requests answers no results."""
    assert list(stub.DecideBatch(pb.DecideBatchRequest(), timeout=10).results) == []


def test_oversized_batch_is_refused_naming_requests(bundle_dir) -> None:
    """A batch above --max-batch is INVALID_ARGUMENT on `requests`, nothing decided."""
    from server._gen.orderpolicy.v1 import order_policy_pb2_grpc as pb_grpc
    from tests.support.servers import running_server

    with running_server(bundle_dir, max_batch=3) as address, grpc.insecure_channel(address) as ch:
        stub = pb_grpc.OrderPolicyServiceStub(ch)
        assert len(stub.DecideBatch(pb.DecideBatchRequest(requests=[_json_request()] * 3)).results) == 3
        with pytest.raises(grpc.RpcError) as info:
            stub.DecideBatch(pb.DecideBatchRequest(requests=[_json_request()] * 4), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in violations(info.value)] == ["requests"]


def test_oversized_message_is_refused(bundle_dir) -> None:
    """A request above --max-message-bytes is RESOURCE_EXHAUSTED before any work."""
    from server._gen.orderpolicy.v1 import order_policy_pb2_grpc as pb_grpc
    from tests.support.servers import running_server

    with running_server(bundle_dir, max_message_bytes=64 * 1024) as address, grpc.insecure_channel(address) as ch:
        stub = pb_grpc.OrderPolicyServiceStub(ch)
        big = {**ORDER, "notes": "x" * 100_000}
        with pytest.raises(grpc.RpcError) as info:
            stub.Decide(_json_request(big), timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert stub.Decide(_json_request(), timeout=10).decision.order_id == "ord-1"


def test_expired_deadline_is_deadline_exceeded(stub) -> None:
    """A batch whose deadline passes is DEADLINE_EXCEEDED, never a late answer."""
    requests = [_json_request()] * 1000
    with pytest.raises(grpc.RpcError) as info:
        stub.DecideBatch(pb.DecideBatchRequest(requests=requests), timeout=0.001)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


# -- nothing a client sends produces INTERNAL ------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(
        [
            "received",
            "received.testkit.ordered",
            "walk_in_test",
            "testkit",
            "2026-03-09T14:03:12+00:00",
            "2026-03-09T14:03:12",
            "pending",
            "confirmed",
            "sonora_quest",
            "ord-1",
        ]
    ),
)
_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "status",
                    "created_at",
                    "details",
                    "type",
                    "lab_test",
                    "method",
                    "events",
                    "last_event",
                    "order_id",
                    "start_at",
                    "provider",
                    "diagnostic_lab_test",
                    "x",
                ]
            ),
            inner,
            max_size=6,
        ),
    ),
    max_leaves=20,
)
_events = st.lists(
    st.builds(
        pb.OrderEvent,
        id=st.integers(-(2**63), 2**63 - 1),
        status=st.sampled_from(["", "received.testkit.ordered", "a.b", "cancelled.x.y", "Z"]),
    ),
    max_size=3,
)
_typed_order = st.builds(
    pb.Order,
    id=st.text(max_size=5),
    status=st.sampled_from(["", "received", "cancelled", "Bad Status", "x"]),
    details_type=st.sampled_from(["", "testkit", "walk_in_test", "nope", "Bad"]),
    lab_test_method=st.sampled_from(["", "testkit", "at_home_phlebotomy"]),
    events=_events,
)
_requests = st.one_of(
    st.builds(
        lambda action, order, appt: pb.DecideRequest(
            action=action,
            order_json=json.dumps(order),
            **({"appointment_json": json.dumps(appt)} if appt is not None else {}),
        ),
        st.integers(0, 3),
        _json,
        st.one_of(st.none(), _json),
    ),
    st.builds(
        lambda action, order, seconds, nanos: _with_now(pb.DecideRequest(action=action, order=order), seconds, nanos),
        st.integers(0, 3),
        _typed_order,
        st.integers(-(2**62), 2**62),
        st.integers(-5, 2 * 10**9),
    ),
)


def _with_now(request: pb.DecideRequest, seconds: int, nanos: int) -> pb.DecideRequest:
    request.now.seconds = seconds
    request.now.nanos = nanos
    return request


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=_requests)
def test_no_client_input_produces_internal(stub, request: pb.DecideRequest) -> None:
    """Whatever a client sends is a decision or INVALID_ARGUMENT, never INTERNAL/UNKNOWN."""
    try:
        stub.Decide(request, timeout=10)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (exc.code(), exc.details())
        assert violations(exc), exc.details()


def test_a_ship_day_past_the_bundles_calendar_is_failed_precondition_naming_the_setting(stub, policy) -> None:
    """The bundle cannot decide an order shipping after its calendar ends: FAILED_PRECONDITION
    with the error code and the setting to extend, in a batch item too, never INTERNAL."""
    from server.facts import calendar_end

    end = calendar_end(policy.bundle.settings)
    assert end is not None
    created = f"{end.isoformat()}T23:00:00+00:00"  # after the cut-off: ships the next business day
    order = {
        "id": "ord-late",
        "created_at": created,
        "status": "received",
        "details": {"type": "testkit"},
        "events": [{"id": 1, "created_at": created, "status": "received.testkit.ordered"}],
    }
    now = Timestamp()
    now.FromJsonString(f"{end.isoformat()}T23:30:00Z")
    error = _fail(stub, _json_request(order, now=now))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == "eval_calendar_ended"
    assert f"add the holidays of {end.year + 1}" in error.details()
    batch = stub.DecideBatch(
        pb.DecideBatchRequest(requests=[_json_request(order, now=now, request_id="late")]), timeout=10
    )
    (item,) = batch.results
    assert item.HasField("error")
    assert item.error.reason == "eval_calendar_ended"
