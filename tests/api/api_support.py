"""Helpers of the API tests: bundle cases as requests, typed inputs, comparisons."""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from server._gen.orderpolicy.v1 import order_policy_pb2 as pb
from server.testing import aware_datetime, typed_appointment, typed_order

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "rules" / "cancellation"
ACTIONS = {"cancel_order": pb.ACTION_CANCEL_ORDER, "cancel_appointment": pb.ACTION_CANCEL_APPOINTMENT}


@functools.cache
def bundle_cases() -> tuple[Any, ...]:
    """Every test case of the default bundle (the core's loader)."""
    from server.cases import load_cases

    return tuple(load_cases(BUNDLE))


def case_ids() -> list[str]:
    return [c.name for c in bundle_cases()]


def _set_ts(target: Any, value: dt.datetime) -> None:
    target.FromDatetime(value.astimezone(dt.UTC))


def request_for(case: Any, *, typed: bool, request_id: str = "") -> pb.DecideRequest | None:
    """The DecideRequest of a bundle case, JSON or typed (None: not expressible so)."""
    import json

    now = aware_datetime(case.now_text)
    if case.action not in ACTIONS or now is None:
        return None
    request = pb.DecideRequest(request_id=request_id or case.name, action=ACTIONS[case.action])
    _set_ts(request.now, now)
    appointment_json = getattr(case, "appointment_json", None)
    if typed:
        if case.order_json is not None or appointment_json is not None:
            return None  # raw JSON text has no typed equivalent
        if not isinstance(case.order, Mapping):
            return None
        order = typed_order(case.order)
        appt = typed_appointment(case.appointment) if case.appointment is not None else None
        if order is None or (case.appointment is not None and appt is None):
            return None
        request.order.CopyFrom(order)
        if appt is not None:
            request.appointment.CopyFrom(appt)
    else:
        request.order_json = (
            case.order_json
            if case.order_json is not None
            else json.dumps(case.order, ensure_ascii=False)
        )
        if appointment_json is not None:
            request.appointment_json = appointment_json
        elif case.appointment is not None:
            request.appointment_json = json.dumps(case.appointment, ensure_ascii=False)
    return request


def model_key(decision: Any) -> tuple[Any, ...]:
    """A core Decision, minus its random id, as comparable plain data."""
    return (
        decision.outcome,
        tuple((r.code, r.message, r.rule_id) for r in decision.reasons),
        tuple((f.code, f.message, f.http_method, f.path, f.rule_id) for f in decision.follow_ups),
        (decision.bundle.name, decision.bundle.revision, decision.bundle.digest),
        decision.now.astimezone(dt.UTC),
        decision.action,
        decision.order_id,
    )


def proto_key(decision: pb.Decision) -> tuple[Any, ...]:
    """A Decision message, minus its id, in the shape of :func:`model_key`."""
    return (
        pb.Outcome.Name(decision.outcome).removeprefix("OUTCOME_"),
        tuple((r.code, r.message, r.rule_id) for r in decision.reasons),
        tuple((f.code, f.message, f.http_method, f.path, f.rule_id) for f in decision.follow_ups),
        (decision.bundle.name, decision.bundle.revision, decision.bundle.digest),
        decision.evaluated_at.ToDatetime(tzinfo=dt.UTC),
        pb.Action.Name(decision.action).removeprefix("ACTION_").lower(),
        decision.order_id,
    )


def expected_field(field: str, request: pb.DecideRequest) -> str:
    """The request field the server must name for a core snapshot ``field``.

    JSON input: the path inside ``order_json``/``appointment_json``; typed input: the
    typed message's field; an input that is absent keeps the core's name.
    """
    match = re.match(r"^(order|appointment)(?=$|[.\[])", field)
    if match is None:
        return field
    head = match.group(1)
    which = request.WhichOneof(f"{head}_input")
    if which == f"{head}_json":
        return f"{head}_json{field[len(head):]}"
    if which == head:
        field = re.sub(r"^order\.details\.type", "order.details_type", field)
        return re.sub(r"^order\.lab_test\.method", "order.lab_test_method", field)
    return field


def violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    """The google.rpc.BadRequest field violations of a failed call."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "no rich status details"
    out = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out.extend((v.field, v.description) for v in bad.field_violations)
    return out


def error_reason(error: grpc.RpcError) -> str:
    """The ErrorInfo reason (the stable snake_case code) of a failed call."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""
