"""Ask a running order-policy server for a few decisions and check them against the core.

Usage: ``python -m tests.image.client HOST:PORT [BUNDLE]``. ``.ci/image-check`` runs it
from the host's venv against the container, which serves the default bundle
(``rules/cancellation``, the default BUNDLE here). Each answer must be the decision the
host's own core makes on the same bundle for the same request (outcome, reasons and
follow-ups with their messages and paths, the bundle's digest), so nothing here depends
on what the policy says; requests the input layer refuses must be INVALID_ARGUMENT
naming the field. Prints one line per check; exits 1 on any mismatch, 2 when the server
cannot be reached.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from server._gen.orderpolicy.v1 import order_policy_pb2 as pb
from server._gen.orderpolicy.v1 import order_policy_pb2_grpc as pb_grpc

DEFAULT_BUNDLE = Path(__file__).resolve().parents[2] / "rules" / "cancellation"
NOW = "2026-03-10T15:00:00+00:00"
ORDER_ID = "6f1c2a34-5b6d-4e7f-8a9b-0c1d2e3f4a5b"
TIMEOUT_S = 10.0


def _ts(text: str) -> Timestamp:
    ts = Timestamp()
    ts.FromJsonString(text.replace("+00:00", "Z"))
    return ts


def _order_json(method: str, top: str, *statuses: str) -> str:
    """Junction's order JSON with one event per status, oldest first."""
    events = [
        {
            "id": 48200 + i,
            "created_at": f"2026-03-09T1{i}:03:12.118402+00:00",
            "status": s,
        }
        for i, s in enumerate(statuses)
    ]
    order = {
        "id": ORDER_ID,
        "created_at": "2026-03-09T10:03:12.118402+00:00",
        "status": top,
        "details": {"type": method, "data": None},
        "lab_test": {"name": "Lipid panel", "method": method},
        "events": events,
        "last_event": events[-1] if events else None,
        "patient_details": {"first_name": "Ada", "last_name": "Lovelace"},
    }
    return json.dumps(order)


@dataclass
class Case:
    name: str
    request: pb.DecideRequest
    error: grpc.StatusCode | None = None  # None: a decision, the core's for the same request
    violation: str | None = None  # a BadRequest field violation naming this field


def _cases() -> list[Case]:
    cancel = pb.ACTION_CANCEL_ORDER
    return [
        Case(
            "walk-in order just ordered (order_json)",
            pb.DecideRequest(
                request_id="walk-in-ordered",
                action=cancel,
                order_json=_order_json("walk_in_test", "received", "received.walk_in_test.ordered"),
                now=_ts(NOW),
            ),
        ),
        Case(
            "testkit on its way to the customer (typed order)",
            pb.DecideRequest(
                request_id="testkit-shipped",
                action=cancel,
                order=pb.Order(
                    id=ORDER_ID,
                    created_at=_ts("2026-03-09T10:03:12+00:00"),
                    status="collecting_sample",
                    details_type="testkit",
                    lab_test_method="testkit",
                    events=[
                        pb.OrderEvent(
                            id=1,
                            created_at=_ts("2026-03-09T10:03:12+00:00"),
                            status="received.testkit.ordered",
                        ),
                        pb.OrderEvent(
                            id=2,
                            created_at=_ts("2026-03-10T09:00:00+00:00"),
                            status="collecting_sample.testkit.transit_customer",
                        ),
                    ],
                ),
                now=_ts(NOW),
            ),
        ),
        Case(
            "completed at-home order",
            pb.DecideRequest(
                request_id="at-home-completed",
                action=cancel,
                order_json=_order_json(
                    "at_home_phlebotomy",
                    "completed",
                    "received.at_home_phlebotomy.ordered",
                    "completed.at_home_phlebotomy.completed",
                ),
                now=_ts(NOW),
            ),
        ),
        Case(
            "walk-in order with an active Quest PSC appointment",
            pb.DecideRequest(
                request_id="walk-in-psc",
                action=cancel,
                order_json=_order_json(
                    "walk_in_test",
                    "collecting_sample",
                    "received.walk_in_test.ordered",
                    "collecting_sample.walk_in_test.appointment_scheduled",
                ),
                appointment=pb.Appointment(
                    id="a1",
                    order_id=ORDER_ID,
                    status="confirmed",
                    provider="quest",
                    type="patient_service_center",
                    start_at=_ts("2026-03-12T15:00:00+00:00"),
                ),
                now=_ts(NOW),
            ),
        ),
        Case(
            "malformed event status",
            pb.DecideRequest(
                request_id="invalid-status",
                action=cancel,
                order_json=_order_json("walk_in_test", "received", "Received-Ordered"),
                now=_ts(NOW),
            ),
            error=grpc.StatusCode.INVALID_ARGUMENT,
            violation="order",
        ),
        Case(
            "unspecified action",
            pb.DecideRequest(
                request_id="no-action",
                order_json=_order_json("walk_in_test", "received", "received.walk_in_test.ordered"),
                now=_ts(NOW),
            ),
            error=grpc.StatusCode.INVALID_ARGUMENT,
            violation="action",
        ),
    ]


def _expected(decider: Any, request: pb.DecideRequest) -> pb.Decision:
    """The host core's decision for ``request`` on the same bundle, as the API sends it."""
    from server.api.convert import decision_to_proto, snapshot_from_request

    return decision_to_proto(decider.decide(snapshot_from_request(request)))


def _summary(d: pb.Decision) -> tuple[Any, ...]:
    """Everything of a decision but its id and instant: outcome, reasons, follow-ups, bundle."""
    return (
        pb.Outcome.Name(d.outcome),
        [(r.code, r.message, r.rule_id) for r in d.reasons],
        [(f.code, f.message, f.http_method, f.path, f.rule_id) for f in d.follow_ups],
        (d.bundle.name, d.bundle.revision, d.bundle.digest),
    )


def _check_decision(case: Case, resp: pb.DecideResponse, want: pb.Decision) -> list[str]:
    problems = []
    got, expected = _summary(resp.decision), _summary(want)
    for what, g, w in zip(("outcome", "reasons", "follow-ups", "bundle"), got, expected, strict=True):
        if g != w:
            problems.append(f"{what} {g}, the core says {w}")
    if resp.request_id != case.request.request_id:
        problems.append(f"request_id {resp.request_id!r}, want {case.request.request_id!r}")
    return problems


def _check_error(case: Case, err: grpc.RpcError) -> list[str]:
    if err.code() != case.error:
        return [f"status {err.code().name}: {err.details()}, want {case.error.name}"]
    status = rpc_status.from_call(err)
    fields = []
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    if not any(f == case.violation or f.startswith(case.violation) for f in fields):
        return [f"no BadRequest field violation naming {case.violation!r} (got {fields})"]
    return []


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        print("usage: python -m tests.image.client HOST:PORT [BUNDLE]", file=sys.stderr)
        return 2
    from server.registry import build_decider

    decider = build_decider(argv[1] if len(argv) > 1 else str(DEFAULT_BUNDLE))
    failures = 0
    with grpc.insecure_channel(argv[0]) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=TIMEOUT_S)
        except grpc.FutureTimeoutError:
            print(f"client: cannot connect to {argv[0]}", file=sys.stderr)
            return 2
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S)
        serving = health.status == health_pb2.HealthCheckResponse.SERVING
        print(
            f"client: {'ok  ' if serving else 'FAIL'} health: "
            f"{health_pb2.HealthCheckResponse.ServingStatus.Name(health.status)}"
        )
        failures += not serving
        stub = pb_grpc.OrderPolicyServiceStub(channel)
        for case in _cases():
            try:
                resp = stub.Decide(case.request, timeout=TIMEOUT_S)
            except grpc.RpcError as err:
                problems = _check_error(case, err) if case.error else [f"status {err.code().name}: {err.details()}"]
                got = err.code().name
            else:
                problems = (
                    _check_decision(case, resp, _expected(decider, case.request))
                    if case.error is None
                    else [f"decision {pb.Outcome.Name(resp.decision.outcome)}, want {case.error.name}"]
                )
                got = " ".join(
                    [pb.Outcome.Name(resp.decision.outcome)]
                    + [r.code for r in resp.decision.reasons]
                    + [f"+{f.code}" for f in resp.decision.follow_ups]
                )
            print(f"client: {'FAIL' if problems else 'ok  '} {case.name}: {got}")
            for problem in problems:
                print(f"client:        {problem}")
            failures += bool(problems)
    decider.close()
    print(f"client: {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
