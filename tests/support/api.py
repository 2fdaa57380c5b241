"""Helpers of the API tests: bundle cases as requests, typed inputs, comparisons."""

from __future__ import annotations

import datetime as dt
import functools
import re
from pathlib import Path
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from server._gen.orderpolicy.v1 import order_policy_pb2 as pb
from tests.support.bundles import FIXTURE_BUNDLE
from tests.support.snapshots import case_request

REPO = Path(__file__).resolve().parents[2]
BUNDLE = FIXTURE_BUNDLE


@functools.cache
def bundle_cases() -> tuple[Any, ...]:
    """Every test case of the fixture bundle (the core's loader)."""
    from server.cases import load_cases

    return tuple(load_cases(BUNDLE))


def case_ids() -> list[str]:
    return [c.name for c in bundle_cases()]


def request_for(case: Any, *, typed: bool, request_id: str = "") -> pb.DecideRequest | None:
    """The DecideRequest of a bundle case, JSON or typed (None: not expressible so)."""
    request = case_request(case, typed=typed)
    if request is not None:
        request.request_id = request_id or case.name
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
        return f"{head}_json{field[len(head) :]}"
    if which == head:
        field = re.sub(r"^order\.details\.type", "order.details_type", field)
        return re.sub(r"^order\.lab_test\.method", "order.lab_test_method", field)
    return field


def violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    """The google.rpc.BadRequest field violations of a failed call."""
    status = rpc_status.from_call(error)
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
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""
