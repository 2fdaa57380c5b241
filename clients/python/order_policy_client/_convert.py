"""Plain Python in, protobuf out, and back: requests, decisions and rich error statuses."""

from __future__ import annotations

import datetime as dt
import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, json_format, message_factory

from order_policy_client._errors import FieldViolation, InvalidArgument, OrderPolicyError, error_class
from order_policy_client._gen.orderpolicy.v1 import order_policy_pb2 as pb
from order_policy_client._results import BundleRef, Decision, Explanation, FollowUp, Reason

__all__ = ["Request", "decision_from", "error_from_item", "error_from_rpc", "request_message"]

ACTIONS = {"cancel_order": pb.ACTION_CANCEL_ORDER, "cancel_appointment": pb.ACTION_CANCEL_APPOINTMENT}
_ACTION_NAMES = {value: name for name, value in ACTIONS.items()}
_OUTCOMES = {pb.OUTCOME_ALLOW: "ALLOW", pb.OUTCOME_DENY: "DENY"}
JsonInput = Mapping[str, Any] | str | bytes


@dataclass(frozen=True, slots=True)
class Request:
    """One request of a batch or stream (``Client.decide`` takes the same fields as arguments).

    ``order``/``appointment``: Junction's JSON as a dict or as JSON text (sent as is; the
    service validates it). ``now``: an aware datetime or ISO 8601 text with an offset;
    None for the server clock.
    """

    order: JsonInput
    appointment: JsonInput | None = None
    action: str = "cancel_order"
    now: dt.datetime | str | None = None
    bundle_revision: str = ""
    explain: bool = False
    request_id: str = ""


def _invalid(field: str, description: str) -> InvalidArgument:
    return InvalidArgument(
        f"invalid request: {description}",
        code="INVALID_ARGUMENT",
        reason="request_invalid",
        field_violations=(FieldViolation(field, description),),
    )


def _json_text(value: Any, field: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise _invalid(field, f"`{field}` is not JSON data: {exc}") from None


def _timestamp(value: dt.datetime | str, field: str) -> dt.datetime:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise _invalid(field, f"`{value}` is not an ISO 8601 timestamp, e.g. `2026-03-10T12:00:00Z`") from None
    if not isinstance(value, dt.datetime):
        raise _invalid(field, f"`{field}` must be an aware datetime or ISO 8601 text, not {type(value).__name__}")
    if value.utcoffset() is None:
        raise _invalid(field, f"`{value.isoformat()}` has no UTC offset, e.g. `2026-03-10T12:00:00Z`")
    return value


def request_message(request: Request) -> pb.DecideRequest:
    """The ``DecideRequest`` of ``request``; InvalidArgument naming the field when it cannot be said."""
    try:
        action = ACTIONS[request.action]
    except (KeyError, TypeError):
        hint = difflib.get_close_matches(str(request.action), list(ACTIONS), n=1)
        tip = f", did you mean `{hint[0]}`" if hint else ", expected `cancel_order` or `cancel_appointment`"
        raise _invalid("action", f"unknown action `{request.action}`{tip}") from None
    out = pb.DecideRequest(
        request_id=request.request_id,
        action=action,
        explain=request.explain,
        bundle_revision=request.bundle_revision,
        order_json=_json_text(request.order, "order"),
    )
    if request.appointment is not None:
        out.appointment_json = _json_text(request.appointment, "appointment")
    if request.now is not None:
        out.now.FromDatetime(_timestamp(request.now, "now").astimezone(dt.UTC))
    return out


def decision_from(message: pb.Decision, request_id: str = "") -> Decision:
    """The typed :class:`Decision` of a ``Decision`` message."""
    explanation = None
    if message.HasField("explanation"):
        explanation = Explanation(
            facts=json_format.MessageToDict(message.explanation.facts),
            matched_rules=tuple(message.explanation.matched_rules),
        )
    return Decision(
        outcome=_OUTCOMES.get(message.outcome, "DENY"),  # type: ignore[arg-type]
        reasons=tuple(Reason(r.code, r.message, r.rule_id) for r in message.reasons),
        follow_ups=tuple(FollowUp(f.code, f.message, f.http_method, f.path, f.rule_id) for f in message.follow_ups),
        bundle=BundleRef(message.bundle.name, message.bundle.revision, message.bundle.digest),
        decision_id=message.decision_id,
        evaluated_at=message.evaluated_at.ToDatetime(dt.UTC) if message.HasField("evaluated_at") else None,
        action=_ACTION_NAMES.get(message.action, "cancel_order"),  # type: ignore[arg-type]
        order_id=message.order_id,
        request_id=request_id,
        explanation=explanation,
    )


def _code_name(value: int) -> str:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code.name
    return "UNKNOWN"


def _violation(field: str, description: str) -> FieldViolation:
    """A violation named after the caller's argument: the client sends ``order`` as ``order_json``."""
    return FieldViolation(_JSON_FIELD.sub(r"\1", field), description)


_JSON_FIELD = re.compile(r"^(order|appointment)_json(?=$|[.\[])")


def error_from_item(error: pb.Error) -> OrderPolicyError:
    """The error of one item of a batch or stream (returned in its place, not raised)."""
    code = _code_name(error.code)
    violations = tuple(_violation(v.field, v.description) for v in error.field_violations)
    return error_class(code)(error.message, code=code, reason=error.reason, field_violations=violations)


# google.rpc.Status, BadRequest and ErrorInfo, wire-compatible, under a private package name: the
# client needs no googleapis package and cannot clash with one the caller's process loads.
def _rpc_messages() -> dict[str, Any]:
    name = "order_policy_client/rpc_status.proto"
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(name)
    except KeyError:
        fdp = descriptor_pb2.FileDescriptorProto(
            name=name,
            package="order_policy_client.rpc",
            syntax="proto3",
            dependency=[any_pb2.DESCRIPTOR.name],
        )
        f = descriptor_pb2.FieldDescriptorProto
        one, many, text = f.LABEL_OPTIONAL, f.LABEL_REPEATED, f.TYPE_STRING
        layout = {
            "Status": [
                ("code", 1, one, f.TYPE_INT32, ""),
                ("message", 2, one, text, ""),
                ("details", 3, many, f.TYPE_MESSAGE, ".google.protobuf.Any"),
            ],
            "FieldViolation": [("field", 1, one, text, ""), ("description", 2, one, text, "")],
            "BadRequest": [("field_violations", 1, many, f.TYPE_MESSAGE, ".order_policy_client.rpc.FieldViolation")],
            "ErrorInfo": [("reason", 1, one, text, ""), ("domain", 2, one, text, "")],
        }
        for message, fields in layout.items():
            added = fdp.message_type.add(name=message)
            for n, num, label, kind, type_name in fields:
                field = added.field.add(name=n, number=num, label=label, type=kind)
                if type_name:
                    field.type_name = type_name
        pool.AddSerializedFile(fdp.SerializeToString())
    return {
        m: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"order_policy_client.rpc.{m}"))
        for m in ("Status", "BadRequest", "ErrorInfo")
    }


_RPC = _rpc_messages()


def error_from_rpc(exc: grpc.RpcError) -> OrderPolicyError:
    """The error of a failed call, with the field violations and reason of its rich status."""
    code = exc.code().name if isinstance(exc, grpc.Call) and exc.code() is not None else "UNKNOWN"
    message = (exc.details() if isinstance(exc, grpc.Call) else None) or code.lower()
    reason, violations = "", []
    trailers: tuple[tuple[str, Any], ...] = tuple(exc.trailing_metadata() or ()) if isinstance(exc, grpc.Call) else ()
    for key, value in trailers:
        if key != "grpc-status-details-bin":
            continue
        status = _RPC["Status"].FromString(value)
        for detail in status.details:
            kind = detail.type_url.rsplit("/", 1)[-1]
            if kind == "google.rpc.BadRequest":
                bad = _RPC["BadRequest"].FromString(detail.value)
                violations += [_violation(v.field, v.description) for v in bad.field_violations]
            elif kind == "google.rpc.ErrorInfo":
                reason = _RPC["ErrorInfo"].FromString(detail.value).reason
    return error_class(code)(message, code=code, reason=reason, field_violations=tuple(violations))
