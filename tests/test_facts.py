"""Property tests: arbitrary JSON in, a decision or a clean error out; never a crash."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from server.errors import SnapshotError
from server.facts import APPOINTMENT_READS, ORDER_READS, parse_json_object, read_json_object
from server.model import Snapshot
from server.registry import build_decider
from tests.support.bundles import FIXTURE_BUNDLE

NOW = dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
statuses = st.sampled_from(
    [
        "received.walk_in_test.ordered",
        "collecting_sample.testkit.transit_customer",
        "cancelled.testkit.cancelled",
        "received.testkit.registered",
        "received.brand_new.ordered",
        "x.y",
        "Received.walk_in_test.ordered",
        "",
    ]
)
timestamps = st.sampled_from(
    [
        "2026-03-09T14:03:12+00:00",
        "2026-03-09T14:03:12Z",
        "2026-03-09T14:03:12",
        "2026-03-09",
        "yesterday",
        "2026-03-09T10:03:12-04:00",
    ]
)
events = st.fixed_dictionaries(
    {},
    optional={"id": st.integers(0, 5) | st.text(max_size=2) | st.none(), "created_at": timestamps, "status": statuses},
)
orders = st.fixed_dictionaries(
    {},
    optional={
        "id": st.sampled_from(["o1", "", None, 7]),
        "status": st.sampled_from(["received", "cancelled", "collecting_sample", "Bad Status", None, 3]),
        "details": st.none()
        | st.fixed_dictionaries(
            {},
            optional={"type": st.sampled_from(["testkit", "walk_in_test", "at_home_phlebotomy", None, 5, "brand_new"])},
        ),
        "lab_test": st.fixed_dictionaries({}, optional={"method": st.sampled_from(["testkit", "walk_in_test", None])}),
        "events": st.lists(events, max_size=4) | json_values,
        "last_event": st.none() | events,
        "created_at": timestamps,
        "extra": json_values,
    },
)
appointments = (
    st.none()
    | json_values
    | st.fixed_dictionaries(
        {},
        optional={
            "order_id": st.sampled_from(["o1", "o2", None]),
            "status": st.sampled_from(["pending", "confirmed", "in_progress", "cancelled", "bogus", None]),
            "provider": st.sampled_from(["quest", "sonora_quest", "getlabs", None, 4]),
            "start_at": timestamps,
        },
    )
)


def assert_says_what_was_wrong(message: str) -> None:
    """A field violation names what was wrong with the value: never a bare kind that could be
    the very kind expected ("expected a non-empty string, got a string"), never a Python repr."""
    got = message.rpartition(", got ")[2] if ", got " in message else ""
    assert got not in ("a string", "a number", "a boolean", "an array"), message
    for literal in ("`None`", "`True`", "`False`"):
        assert literal not in message, message


@pytest.mark.parametrize(
    ("order", "appointment", "field", "message"),
    [
        ({"id": ""}, None, "order.id", "expected a non-empty string, got an empty string"),
        ({"id": 7}, None, "order.id", "expected a non-empty string, got the number `7`"),
        ({"id": "o", "events": [{"id": 1.5}]}, None, "order.events[0].id", "expected an integer, got the number `1.5`"),
        ({"id": "o", "events": [{"id": True}]}, None, "order.events[0].id", "expected an integer, got `true`"),
        (
            {"id": "o", "events": [{"id": 1, "created_at": "2026-03-09T14:03:12+00:00", "status": 5}]},
            None,
            "order.events[0].status",
            "expected a HIGH.METHOD.LOW string, got the number `5`",
        ),
        (
            {"id": "o", "status": ["received"]},
            None,
            "order.status",
            "expected a lower_snake_case top status, got an array of 1 items",
        ),
        (
            {"id": "o", "status": "received", "details": {"type": 3}},
            None,
            "order.details.type",
            "expected a lower_snake_case method, got the number `3`",
        ),
        (
            {"id": "o", "status": "received", "details": {"type": "Walk In"}},
            None,
            "order.details.type",
            "`Walk In` is not a lower_snake_case method",
        ),
        (
            {"id": "o", "status": "received", "details": "walk_in_test"},
            None,
            "order.details",
            "expected an object, got the string `walk_in_test`",
        ),
        (
            {"id": "o", "status": "received", "details": {"type": "walk_in_test"}},
            {},
            "appointment.status",
            "missing: expected one of ",
        ),
        (
            {"id": "o", "status": "received", "details": {"type": "walk_in_test"}},
            {"status": 4},
            "appointment.status",
            ", got the number `4`",
        ),
    ],
)
def test_each_field_violation_says_what_was_wrong_with_the_value(decider, order, appointment, field, message):
    """The message names the value or what it lacked, not only the kind that was expected."""
    with pytest.raises(SnapshotError) as info:
        decider.decide(Snapshot("cancel_order", order, appointment, NOW))
    assert info.value.field == field
    assert message in info.value.message
    assert_says_what_was_wrong(info.value.message)


@pytest.fixture(scope="module")
def decider():
    d = build_decider(FIXTURE_BUNDLE)
    yield d
    d.close()


def _decide_or_error(decider, snapshot):
    try:
        decision = decider.decide(snapshot)
    except SnapshotError as exc:
        assert exc.field
        assert isinstance(exc.field, str)
        assert "\n" not in str(exc)
        assert_says_what_was_wrong(exc.message)
        return None
    assert decision.outcome in ("ALLOW", "DENY")
    assert decision.reasons, "every decision has at least one reason"
    return decision


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=orders, appointment=appointments, action=st.sampled_from(["cancel_order", "cancel_appointment", "nope"]))
def test_structured_arbitrary_snapshots_decide_or_fail_cleanly(decider, order, appointment, action):
    """Order-shaped random input: a decision, or a SnapshotError naming a field."""
    _decide_or_error(decider, Snapshot(action, order, appointment, NOW))


def _facts_or_error(decider, snapshot):
    try:
        return decider.facts(snapshot).values
    except SnapshotError as exc:
        return (exc.field, exc.message)


# Orders near the valid shape (every field mostly right, one or two wrong): the shortcuts
# of the facts reader decide exactly these.
_methods = st.sampled_from(["testkit", "walk_in_test", "at_home_phlebotomy", None, 5, "Walk In", ["testkit"]])
_near_events = st.fixed_dictionaries(
    {
        "id": st.sampled_from([1, 2, 3, True, "4", None]),
        "created_at": st.sampled_from(
            ["2026-03-09T14:03:12+00:00", "2026-03-09T10:03:12-04:00", "2026-03-09T14:03:12", "soon", 7, None]
        ),
        "status": statuses,
    }
)
near_orders = st.fixed_dictionaries(
    {
        "id": st.just("o1"),
        "status": st.sampled_from(["received", "collecting_sample", "cancelled", "Bad Status", 3]),
        "details": st.fixed_dictionaries({"type": _methods}) | st.sampled_from([None, "testkit", []]),
    },
    optional={
        "lab_test": st.fixed_dictionaries({}, optional={"method": _methods}) | st.sampled_from([None, 1]),
        "diagnostic_lab_test": st.fixed_dictionaries({}, optional={"method": _methods}) | st.just("x"),
        "events": st.lists(_near_events | st.sampled_from([None, "e", []]), max_size=4),
        "last_event": _near_events,
        "created_at": timestamps,
    },
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    order=near_orders | orders,
    appointment=appointments,
    action=st.sampled_from(["cancel_order", "cancel_appointment"]),
    typed_times=st.booleans(),
)
@example(  # each source that names a method must agree: the fast path checks them too
    order={"id": "o1", "status": "received", "details": {"type": "testkit"}, "lab_test": {"method": "walk_in_test"}},
    appointment=None,
    action="cancel_order",
    typed_times=False,
)
@example(
    order={"id": "o1", "status": "received", "details": {"type": "testkit"}, "diagnostic_lab_test": {"method": 5}},
    appointment=None,
    action="cancel_order",
    typed_times=False,
)
def test_the_fast_paths_derive_what_the_checked_paths_derive(decider, order, appointment, action, typed_times):
    """Statuses and methods already found valid skip their regular expressions, and usual
    events skip the checked reader: with those shortcuts (spellings remembered) and without
    them (nothing remembered, every value checked), the facts or the error are the same."""
    from server import facts

    if typed_times:  # the typed gRPC path hands over aware datetimes, not text
        for event in (order.get("events") if isinstance(order.get("events"), list) else []) + [order.get("last_event")]:
            if isinstance(event, dict) and isinstance(event.get("created_at"), str):
                try:
                    event["created_at"] = dt.datetime.fromisoformat(event["created_at"])
                except ValueError:
                    pass
    snapshot = Snapshot(action, order, appointment, NOW)
    saved = (dict(facts._GOOD_STATUSES), dict(facts._GOOD_WORDS), facts._KNOWN_LIMIT)
    try:
        facts._GOOD_STATUSES.clear()
        facts._GOOD_WORDS.clear()
        facts._KNOWN_LIMIT = 0
        checked = _facts_or_error(decider, snapshot)
        facts._KNOWN_LIMIT = 4096
        for spelling in ("received.walk_in_test.ordered", "collecting_sample.testkit.transit_customer"):
            facts._GOOD_STATUSES[spelling] = None
        for spelling in ("received.testkit.registered", "cancelled.testkit.cancelled", "received.brand_new.ordered"):
            facts._GOOD_STATUSES[spelling] = None
        for spelling in ("testkit", "walk_in_test", "at_home_phlebotomy", "brand_new", "received", "cancelled"):
            facts._GOOD_WORDS[spelling] = None
        facts._GOOD_WORDS["collecting_sample"] = None
        fast = _facts_or_error(decider, snapshot)
    finally:
        facts._GOOD_STATUSES.clear()
        facts._GOOD_STATUSES.update(saved[0])
        facts._GOOD_WORDS.clear()
        facts._GOOD_WORDS.update(saved[1])
        facts._KNOWN_LIMIT = saved[2]
    assert fast == checked


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=json_values)
def test_any_json_document_decides_or_fails_cleanly(decider, value):
    """Any JSON value as the order text: parse error or decision, never an exception of another kind."""
    try:
        order = parse_json_object(json.dumps(value), "order")
    except SnapshotError as exc:
        assert exc.field == "order"
        return
    _decide_or_error(decider, Snapshot("cancel_order", order, None, NOW))


def _read_or_error(read, text, reads):
    try:
        return read(text, "order_json", reads)
    except SnapshotError as exc:
        return ("error", exc.field, exc.message)


def _projected(parse):
    def read(text, field, reads):
        from server.workbench.capture import project

        return project(parse(text, field, reads), reads)

    return read


_texts_near_json = st.one_of(
    st.builds(json.dumps, orders),
    st.builds(json.dumps, near_orders),
    st.builds(lambda v: json.dumps(v, ensure_ascii=False), orders),
    st.builds(json.dumps, appointments),
    st.builds(lambda v: json.dumps(v, indent=1), json_values),
    st.text(max_size=40),
)


@st.composite
def _spliced(draw):
    """A JSON text, sometimes with a member spliced in first: a key repeated, an escape, a
    lone surrogate, deep nesting, numbers decoders read differently (in a field the policy
    reads or not)."""
    text = draw(_texts_near_json)
    splice = draw(
        st.sampled_from(
            [
                "",
                '"status": "cancelled", ',
                '"id": "p", ',
                '"st\\u0061tus": "x", ',
                '"details": {"type": "testkit", "type": "walk_in_test"}, ',
                '"x": "\\ud800", ',
                '"id": "\\ud83d\\ude00", ',
                '"x": ' + "[" * 2000 + "]" * 2000 + ", ",
                '"events": [{"id": 1, "id": 2}], ',
                '"n": 1e400, ',
                '"n": -1E+999, ',
                '"n": 123456789012345678901234567890, ',
                '"last_event": {"id": 18446744073709551616, "created_at": "2026-03-09T14:03:12+00:00", '
                '"status": "received.testkit.registered"}, ',
                '"events": [{"id": 1.5e300, "created_at": "2026-03-09T14:03:12Z", "status": "x.y.z"}], ',
            ]
        )
    )
    if splice and text.startswith("{") and len(text) > 2:
        text = "{" + splice + text[1:]
    return text


@settings(max_examples=1500, deadline=None)
@given(text=_spliced(), appointment=st.booleans())
def test_reading_only_the_read_fields_gives_what_the_whole_document_gives(text, appointment):
    """The service decodes only what the policy reads: for any text, the policy sees the
    same fields as in the whole document (the READ_FIELDS projection), or the very same error."""
    reads = APPOINTMENT_READS if appointment else ORDER_READS
    for data in (text, text.encode("utf-8", "surrogatepass")):
        fast = _read_or_error(_projected(read_json_object), data, reads)
        assert fast == _read_or_error(_projected(parse_json_object), data, reads)


def test_the_usual_order_is_read_without_decoding_the_rest():
    """A plain order takes the shortcut: only the fields the policy reads come back."""
    from tests.support.snapshots import PHLEBOTOMY_ORDER

    order = dict(PHLEBOTOMY_ORDER, patient_details={"first_name": "Maya"}, markers=[{"id": 1}] * 3)
    got = read_json_object(json.dumps(order), "order_json", ORDER_READS)
    assert "patient_details" not in got
    assert "markers" not in got
    assert got["id"] == order["id"]
    assert got["events"] == order["events"]


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=50) | st.binary(max_size=50))
def test_garbage_text_is_an_error_naming_the_order(text):
    """Bytes and text that are not a JSON object name the `order` field."""
    try:
        parse_json_object(text, "order")
    except SnapshotError as exc:
        assert exc.field == "order"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=orders)
def test_a_terminal_top_status_never_allows(decider, order):
    """Fail closed: whatever else the snapshot says, a cancelled top status never gives ALLOW."""
    order = dict(order, status="cancelled")
    decision = _decide_or_error(decider, Snapshot("cancel_order", order, None, NOW))
    if decision is not None:
        assert decision.outcome == "DENY"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('{"id": "o", "status": "received", "status": "cancelled"}', "order.status"),
        ('{"id": "o", "id": "p", "status": "received"}', "order.id"),
        ('{"id": "o", "details": {"type": "testkit", "type": "walk_in_test"}}', "order.details.type"),
        ('{"id": "o", "lab_test": {"method": "testkit", "method": "walk_in_test"}}', "order.lab_test.method"),
        (
            '{"id": "o", "events": [{"id": 1, "status": "a.b.c"}, {"id": 2, "status": "a.b.c", "status": "x.y.z"}]}',
            "order.events[1].status",
        ),
        ('{"id": "o", "last_event": {"id": 1, "created_at": "a", "created_at": "b"}}', "order.last_event.created_at"),
        ('{"id": "o", "events": [], "events": [{"id": 1}]}', "order.events"),
        ('{"id": "o", "st\\u0061tus": "received", "status": "cancelled"}', "order.status"),  # an escaped spelling
        ('{"id": "o\\u0022", "status": "a", "status": "b"}', "order.status"),  # a quote spelled as an escape
        ('{"id": "o", "x": ' + "[" * 300 + "]" * 300 + ', "status": "a", "status": "b"}', "order.status"),
    ],
)
def test_a_read_key_twice_in_one_object_is_refused_naming_it(text, field):
    """Parsers disagree on which of two values counts: a key the policy reads may appear only once."""
    with pytest.raises(SnapshotError) as info:
        parse_json_object(text, "order", ORDER_READS)
    assert info.value.field == field
    assert info.value.message.startswith("appears twice in the same object")
    assert_says_what_was_wrong(info.value.message)
    with pytest.raises(SnapshotError) as info:
        parse_json_object(text.encode(), "order", ORDER_READS)  # bytes take the same path
    assert info.value.field == field


@pytest.mark.parametrize(
    "text",
    [
        '{"id": "o", "patient_details": {"first_name": "A", "first_name": "B"}, "status": "received"}',
        '{"id": "o", "lab_test": {"method": "testkit", "id": 1, "id": 2}}',
        '{"id": "o\\u0022", "status": "received"}',
        '{"id": "o", "x": ' + "[" * 300 + "]" * 300 + "}",
    ],
)
def test_duplicates_the_policy_does_not_read_and_unusual_spellings_are_accepted(text):
    """Duplicates in ignored fields, escaped quotes and deep nesting parse as before."""
    assert parse_json_object(text, "order", ORDER_READS)["id"].startswith("o")


def test_an_appointment_key_twice_is_refused_naming_it():
    with pytest.raises(SnapshotError) as info:
        parse_json_object('{"status": "confirmed", "status": "cancelled"}', "appointment_json", APPOINTMENT_READS)
    assert info.value.field == "appointment_json.status"
