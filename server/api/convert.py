"""Proto <-> model conversion for ``orderpolicy.v1`` (nothing else lives here).

A typed ``Order``/``Appointment`` becomes the same dict shape as Junction's JSON, so
the JSON and the typed paths reach the decision core identically. Zero values (empty
string, ``0``, unset Timestamp) mean "absent from the JSON". Every conversion failure
is a :class:`SnapshotError` naming the request field, never a bare exception.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2

from server._gen.orderpolicy.v1 import order_policy_pb2 as pb
from server.errors import SnapshotError
from server.facts import APPOINTMENT_READS, ORDER_READS, read_json_object
from server.model import ALLOW, DENY, BundleRef, Decision, Snapshot

__all__ = [
    "ACTION_NAMES",
    "appointment_to_dict",
    "decision_to_proto",
    "fill_decision",
    "input_parts",
    "order_to_dict",
    "request_field",
    "snapshot_from_request",
]

ACTION_NAMES = {
    pb.ACTION_CANCEL_ORDER: "cancel_order",
    pb.ACTION_CANCEL_APPOINTMENT: "cancel_appointment",
}
_ACTION_ENUMS = {name: value for value, name in ACTION_NAMES.items()}
_OUTCOMES = {ALLOW: pb.OUTCOME_ALLOW, DENY: pb.OUTCOME_DENY}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NANOS = 1_000_000_000


def snapshot_from_request(request: pb.DecideRequest) -> Snapshot:
    """Build the snapshot of one ``DecideRequest``.

    Raises:
        SnapshotError: the action is unspecified or unknown, an input is not a JSON
            object, a timestamp is out of range, or no order was given. ``field`` names
            the request field (``action``, ``order_json``, ``order.created_at``, ...).
    """
    action = ACTION_NAMES.get(request.action)
    if action is None:
        if request.action == pb.ACTION_UNSPECIFIED:
            raise SnapshotError("action", "an action is required: `ACTION_CANCEL_ORDER` or `ACTION_CANCEL_APPOINTMENT`")
        raise SnapshotError("action", f"unknown action `{request.action}`")

    which = request.WhichOneof("order_input")
    if which == "order_json":
        # Only what the policy reads is decoded (server.facts.READ_FIELDS).
        order: dict[str, Any] = read_json_object(request.order_json, "order_json", ORDER_READS)
    elif which == "order":
        order = order_to_dict(request.order)
    else:
        raise SnapshotError("order", "an order is required: set `order_json` or `order`")

    which = request.WhichOneof("appointment_input")
    appointment: dict[str, Any] | None
    if which == "appointment_json":
        appointment = read_json_object(request.appointment_json, "appointment_json", APPOINTMENT_READS)
    elif which == "appointment":
        appointment = appointment_to_dict(request.appointment)
    else:
        appointment = None

    now = _datetime(request.now, "now") if request.HasField("now") else None
    return Snapshot(action=action, order=order, appointment=appointment, now=now)


def input_parts(request: pb.DecideRequest) -> tuple[Any, ...]:
    """The inputs of a request as received, for the decision log's input digest.

    JSON inputs stay the text the request carried and typed inputs their messages
    (hashed later, on the log's writer thread); parsed input is never re-serialised.
    """
    order = request.order_json if request.WhichOneof("order_input") == "order_json" else request.order
    which = request.WhichOneof("appointment_input")
    appointment = (
        None if which is None else request.appointment_json if which == "appointment_json" else request.appointment
    )
    return (request.action, order, appointment, request.now if request.HasField("now") else None)


def order_to_dict(order: pb.Order) -> dict[str, Any]:
    """The typed order in the shape of Junction's ``GET /v3/order/{order_id}`` JSON."""
    out: dict[str, Any] = {}
    if order.id:
        out["id"] = order.id
    if order.HasField("created_at"):
        out["created_at"] = _datetime(order.created_at, "order.created_at")
    if order.status:
        out["status"] = order.status
    if order.details_type:
        out["details"] = {"type": order.details_type}
    if order.lab_test_method:
        out["lab_test"] = {"method": order.lab_test_method}
    out["events"] = [_event_to_dict(event, i) for i, event in enumerate(order.events)]
    if order.HasField("last_event"):
        out["last_event"] = _event_to_dict(order.last_event, -1)
    return out


def appointment_to_dict(appointment: pb.Appointment) -> dict[str, Any]:
    """The typed appointment in the shape of Junction's appointment JSON.

    ``start_at`` is always present: ``null`` when unset, as Junction sends a pending
    appointment.
    """
    out: dict[str, Any] = {}
    for name in ("id", "order_id", "status", "provider", "type"):
        value = getattr(appointment, name)
        if value:
            out[name] = value
    start = appointment.start_at
    out["start_at"] = _datetime(start, "appointment.start_at") if appointment.HasField("start_at") else None
    return out


def _event_to_dict(event: pb.OrderEvent, index: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ev_id = event.id
    if ev_id:
        out["id"] = ev_id
    if event.HasField("created_at"):
        out["created_at"] = _datetime(event.created_at, "", index)
    status = event.status
    if status:
        out["status"] = status
    return out


def _datetime(ts: timestamp_pb2.Timestamp, field: str, event: int | None = None) -> datetime:
    """The instant as an aware UTC datetime (the facts layer takes it as it is: no text
    round trip), or a SnapshotError naming ``field`` outside Timestamp's range (for an
    event's ``created_at``, ``event`` is its index, -1 for ``last_event``: the field's
    name is spelt out only for an error)."""
    seconds = ts.seconds
    nanos = ts.nanos
    if 0 <= nanos < _NANOS and _MIN_SECONDS <= seconds <= _MAX_SECONDS:
        return _EPOCH + timedelta(0, seconds, nanos // 1000)
    if event is not None:
        field = f"order.events[{event}].created_at" if event >= 0 else "order.last_event.created_at"
    if not 0 <= nanos < _NANOS:
        raise SnapshotError(field, f"nanos `{nanos}` is out of range: expected 0 to 999,999,999")
    raise SnapshotError(field, f"`{seconds}` seconds is out of the Timestamp range")


# Timestamp's own range (0001-01-01 .. 9999-12-31).
_MIN_SECONDS, _MAX_SECONDS = -62135596800, 253402300799


_FIELD_HEAD = re.compile(r"^(order|appointment)(?=$|[.\[])")
_TYPED_FIELDS = (
    ("order.details.type", "order.details_type"),
    ("order.lab_test.method", "order.lab_test_method"),
)


def request_field(field: str, request: pb.DecideRequest) -> str:
    """Translate a snapshot field path of the core into a path of the request.

    The core names fields of Junction's JSON (``order.events[0].status``). For JSON
    input that is a path inside ``order_json``/``appointment_json``; for typed input
    it is the path of the typed message (``order.details.type`` -> ``order.details_type``).
    """
    match = _FIELD_HEAD.match(field)
    if match is None:
        return field
    head = match.group(1)
    if request.WhichOneof(f"{head}_input") == f"{head}_json":
        return f"{head}_json{field[len(head) :]}"
    for core, typed in _TYPED_FIELDS:
        if field == core or field.startswith((core + ".", core + "[")):
            return typed + field[len(core) :]
    return field


# INVARIANT: a BundleRef is immutable, so its protobuf can be cached per ref.
_bundle_cache: dict[BundleRef, pb.BundleRef] = {}


def _bundle_proto(ref: BundleRef) -> pb.BundleRef:
    msg = _bundle_cache.get(ref)
    if msg is None:
        if len(_bundle_cache) > 64:  # bounded: revisions come and go with reloads
            _bundle_cache.clear()
        msg = _bundle_cache[ref] = pb.BundleRef(name=ref.name, revision=ref.revision, digest=ref.digest)
    return msg


def decision_to_proto(decision: Decision, *, explain: bool = False) -> pb.Decision:
    """The protobuf of a decision; the explanation only when ``explain``."""
    return fill_decision(pb.Decision(), decision, explain=explain)


def fill_decision(msg: pb.Decision, decision: Decision, *, explain: bool = False) -> pb.Decision:
    """Write a decision into an empty ``Decision`` message (one inside a response: no copy)."""
    msg.outcome = _OUTCOMES.get(decision.outcome, pb.OUTCOME_UNSPECIFIED)
    msg.bundle.CopyFrom(_bundle_proto(decision.bundle))
    msg.decision_id = decision.decision_id
    msg.action = _ACTION_ENUMS.get(decision.action, pb.ACTION_UNSPECIFIED)
    msg.order_id = decision.order_id
    # Sub-messages are filled in place (`add`, field by field): building them apart and
    # copying them in, or `Timestamp.FromDatetime`, costs 2-3x more per decision.
    add_reason = msg.reasons.add
    for r in decision.reasons:
        add_reason(code=r.code, message=r.message, rule_id=r.rule_id)
    add_follow_up = msg.follow_ups.add
    for f in decision.follow_ups:
        add_follow_up(code=f.code, message=f.message, http_method=f.http_method, path=f.path, rule_id=f.rule_id)
    since = decision.now - _EPOCH
    at = msg.evaluated_at
    at.seconds = since.days * 86400 + since.seconds
    at.nanos = since.microseconds * 1000
    if explain:
        _fill_struct(msg.explanation.facts, decision.facts)
        msg.explanation.matched_rules.extend(decision.matched_rules)
    return msg


def _fill_struct(out: struct_pb2.Struct, facts: Any) -> None:
    """Write the facts into a ``Struct``: scalars value by value (the facts are strings,
    booleans, numbers or null); anything else as its JSON with ``default=str``."""
    fields = out.fields
    for name, value in facts.items():
        kind = type(value)
        if kind is str:
            fields[name].string_value = value
        elif kind is bool:
            fields[name].bool_value = value
        elif kind is int or kind is float:
            fields[name].number_value = value
        elif value is None:
            fields[name].null_value = struct_pb2.NULL_VALUE
        else:  # datetimes, tuples: as JSON would say them
            out.update({name: json.loads(json.dumps(value, default=str))})
