"""Proto <-> model conversion: typed inputs take Junction's JSON shape; decisions map 1:1."""

from __future__ import annotations

import datetime as dt

import pytest
from google.protobuf import timestamp_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from server._gen.orderpolicy.v1 import order_policy_pb2 as pb
from server.api import convert
from server.errors import SnapshotError
from server.model import BundleRef, Decision, FollowUp, Reason


def _ts(text: str):
    from google.protobuf import timestamp_pb2

    out = timestamp_pb2.Timestamp()
    out.FromDatetime(dt.datetime.fromisoformat(text))
    return out


def test_typed_order_becomes_junctions_json_shape() -> None:
    """Every typed field lands where Junction's JSON has it; timestamps as aware UTC datetimes."""
    order = pb.Order(
        id="o-1",
        status="received",
        details_type="testkit",
        lab_test_method="testkit",
        created_at=_ts("2026-03-09T10:40:00.5-04:00"),
        events=[pb.OrderEvent(id=7, status="received.testkit.ordered", created_at=_ts("2026-03-09T14:40:00+00:00"))],
        last_event=pb.OrderEvent(id=7, status="received.testkit.ordered", created_at=_ts("2026-03-09T14:40:00+00:00")),
    )
    assert convert.order_to_dict(order) == {
        "id": "o-1",
        "created_at": dt.datetime(2026, 3, 9, 14, 40, 0, 500000, tzinfo=dt.UTC),
        "status": "received",
        "details": {"type": "testkit"},
        "lab_test": {"method": "testkit"},
        "events": [
            {
                "id": 7,
                "created_at": dt.datetime(2026, 3, 9, 14, 40, tzinfo=dt.UTC),
                "status": "received.testkit.ordered",
            }
        ],
        "last_event": {
            "id": 7,
            "created_at": dt.datetime(2026, 3, 9, 14, 40, tzinfo=dt.UTC),
            "status": "received.testkit.ordered",
        },
    }


def test_zero_values_are_absent_keys() -> None:
    """Empty strings, id 0 and unset Timestamps are left out (start_at becomes null)."""
    assert convert.order_to_dict(pb.Order(events=[pb.OrderEvent()])) == {"events": [{}]}
    assert convert.appointment_to_dict(pb.Appointment(status="pending")) == {
        "status": "pending",
        "start_at": None,
    }


@given(
    st.datetimes(
        min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59, 59), timezones=st.just(dt.UTC)
    )
)
def test_timestamp_is_the_same_instant(value: dt.datetime) -> None:
    """Any valid Timestamp becomes the same instant as an aware UTC datetime."""
    ts = _ts(value.isoformat())
    parsed = convert.order_to_dict(pb.Order(created_at=ts))["created_at"]
    assert parsed.utcoffset() == dt.timedelta(0)
    assert parsed == value


@pytest.mark.parametrize(
    ("core_field", "request_kwargs", "expected"),
    [
        ("order.events[2].status", {"order_json": "{}"}, "order_json.events[2].status"),
        ("order", {"order_json": "{}"}, "order_json"),
        ("order.details.type", {"order": pb.Order()}, "order.details_type"),
        ("order.lab_test.method", {"order": pb.Order()}, "order.lab_test_method"),
        ("order.events[0].id", {"order": pb.Order()}, "order.events[0].id"),
        ("appointment.status", {"appointment_json": "{}"}, "appointment_json.status"),
        ("appointment", {}, "appointment"),
        ("orderly", {"order_json": "{}"}, "orderly"),
        ("now", {"order_json": "{}"}, "now"),
    ],
)
def test_core_fields_become_request_fields(core_field: str, request_kwargs: dict, expected: str) -> None:
    """A core field names the request field the client actually set."""
    assert convert.request_field(core_field, pb.DecideRequest(**request_kwargs)) == expected


def test_unspecified_action_is_a_snapshot_error_on_action() -> None:
    """ACTION_UNSPECIFIED never reaches the core."""
    with pytest.raises(SnapshotError) as info:
        convert.snapshot_from_request(pb.DecideRequest(order_json="{}"))
    assert info.value.field == "action"


def test_now_is_an_aware_utc_datetime() -> None:
    """`now` becomes an aware datetime; unset stays None (the server clock)."""
    request = pb.DecideRequest(action=pb.ACTION_CANCEL_ORDER, order_json="{}", now=_ts("2026-03-12T15:00:00.25+00:00"))
    snapshot = convert.snapshot_from_request(request)
    assert snapshot.now == dt.datetime(2026, 3, 12, 15, 0, 0, 250000, tzinfo=dt.UTC)
    assert snapshot.action == "cancel_order"
    request.ClearField("now")
    assert convert.snapshot_from_request(request).now is None


def test_decision_maps_field_by_field() -> None:
    """Outcome, reasons, follow-ups, bundle, id, instant, action, order id; explanation on ask."""
    decision = Decision(
        outcome="DENY",
        reasons=(Reason("TERMINAL_STATE", "no", "terminal"),),
        follow_ups=(FollowUp("REFETCH_ORDER", "fetch", "refetch", "GET", "/v3/order/o-1"),),
        bundle=BundleRef("cancellation", "r1", "d1"),
        now=dt.datetime(2026, 3, 12, 15, tzinfo=dt.UTC),
        action="cancel_appointment",
        order_id="o-1",
        decision_id="abc",
        facts={"method": "testkit", "notice": 5, "when": dt.date(2026, 3, 12)},
        matched_rules=("terminal", "refetch"),
    )
    msg = convert.decision_to_proto(decision)
    assert msg.outcome == pb.OUTCOME_DENY
    assert [(r.code, r.message, r.rule_id) for r in msg.reasons] == [("TERMINAL_STATE", "no", "terminal")]
    assert [(f.code, f.http_method, f.path, f.rule_id) for f in msg.follow_ups] == [
        ("REFETCH_ORDER", "GET", "/v3/order/o-1", "refetch")
    ]
    assert (msg.bundle.name, msg.bundle.revision, msg.bundle.digest) == ("cancellation", "r1", "d1")
    assert msg.decision_id == "abc"
    assert msg.evaluated_at.ToDatetime(tzinfo=dt.UTC) == decision.now
    assert msg.action == pb.ACTION_CANCEL_APPOINTMENT
    assert msg.order_id == "o-1"
    assert not msg.HasField("explanation")
    explained = convert.decision_to_proto(decision, explain=True).explanation
    assert list(explained.matched_rules) == ["terminal", "refetch"]
    assert explained.facts["method"] == "testkit"
    assert explained.facts["notice"] == 5
    assert explained.facts["when"] == "2026-03-12"


@settings(max_examples=300, deadline=None)
@given(
    now=st.datetimes(
        min_value=dt.datetime(1, 1, 2),
        max_value=dt.datetime(9999, 12, 30),
        timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=-5)), dt.timezone(dt.timedelta(hours=14))]),
    )
)
def test_evaluated_at_is_the_timestamp_protobuf_itself_would_write(now):
    """The decision's `evaluated_at`, filled field by field, equals `Timestamp.FromDatetime` (any offset, before 1970 too)."""
    decision = Decision(
        outcome="ALLOW",
        reasons=(),
        follow_ups=(),
        bundle=BundleRef("b", "r"),
        now=now,
        action="cancel_order",
        order_id="o",
    )
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(now)
    assert convert.decision_to_proto(decision).evaluated_at == expected


_fact_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**60), 2**60),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.tuples(st.integers(0, 3), st.text(max_size=3)),
    st.datetimes(timezones=st.just(dt.UTC)),
)


@settings(max_examples=300, deadline=None)
@given(facts=st.dictionaries(st.text(min_size=1, max_size=12), _fact_values, max_size=20))
def test_the_explanation_holds_the_facts_as_their_json_would(facts):
    """The explanation's Struct is written value by value: the same message as the facts
    sent through JSON (``default=str`` for datetimes and tuples) and ``Struct.update``."""
    import json

    from google.protobuf import struct_pb2

    want = struct_pb2.Struct()
    want.update(json.loads(json.dumps(facts, default=str)))
    got = struct_pb2.Struct()
    convert._fill_struct(got, facts)
    assert got == want
