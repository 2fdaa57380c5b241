"""Compare a client's results with the expectations of the bundle's own cases."""

from __future__ import annotations

from typing import Any

from order_policy_client import Decision, InvalidArgument, OrderPolicyError, Request


def case_request(case: dict[str, Any], request_id: str = "") -> Request:
    """What a caller sends for ``case``: raw JSON text where the case has it, else the JSON data."""
    order = case["order_json"] if case["order_json"] is not None else case["order"]
    appointment = case["appointment_json"] if case["appointment_json"] is not None else case["appointment"]
    return Request(order=order, appointment=appointment, action=case["action"], now=case["now"], request_id=request_id)


def differences(case: dict[str, Any], got: Decision | OrderPolicyError) -> list[str]:
    """Where ``got`` differs from the case's expectation (empty: as expected)."""
    exp, name = case["expect"], case["name"]
    if "error" in exp:
        if not isinstance(got, InvalidArgument):
            return [f"{name}: expected InvalidArgument on `{exp['error']['field']}`, got {got!r}"]
        if exp["error"]["field"] not in got.fields:
            return [f"{name}: expected a violation of `{exp['error']['field']}`, got {got.fields}"]
        return []
    if not isinstance(got, Decision):
        return [f"{name}: expected {exp['outcome']}, got {got!r}"]
    out = []
    checks = {
        "outcome": (exp["outcome"], got.outcome),
        "reasons": (sorted(exp["reasons"]), sorted(r.code for r in got.reasons)),
        "follow_ups": (sorted(exp["follow_ups"]), sorted(f.code for f in got.follow_ups)),
    }
    if "rules" in exp:
        checks["rules"] = (
            sorted(exp["rules"]),
            sorted({r.rule_id for r in got.reasons} | {f.rule_id for f in got.follow_ups}),
        )
    if "messages" in exp:
        checks["messages"] = (sorted(exp["messages"]), sorted(r.message for r in got.reasons))
    if "paths" in exp:
        checks["paths"] = (sorted(exp["paths"]), sorted(f.path for f in got.follow_ups if f.path))
    for what, (want, have) in checks.items():
        if want != have:
            out.append(f"{name}: {what} expected {want}, got {have}")
    return out
