"""Snapshots as the API's typed messages: Junction's order JSON as ``Order``, a bundle case
as a ``DecideRequest`` (for the API tests and the load corpus)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

__all__ = ["aware_datetime", "case_request", "typed_appointment", "typed_order"]


def aware_datetime(value: Any) -> dt.datetime | None:
    """A JSON timestamp with an offset as an aware datetime, else None."""
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.utcoffset() is not None else None


def _event(raw: Any) -> Any:
    from server._gen.orderpolicy.v1 import order_policy_pb2 as pb

    if not isinstance(raw, Mapping):
        return None
    ev_id, created, status = raw.get("id"), aware_datetime(raw.get("created_at")), raw.get("status")
    # Typed zero values mean "absent": an empty status or id 0 cannot be said typed.
    if type(ev_id) is not int or ev_id <= 0 or created is None or not isinstance(status, str) or not status:
        return None
    event = pb.OrderEvent(id=ev_id, status=status)
    event.created_at.FromDatetime(created.astimezone(dt.UTC))
    return event


def _sub(order: Mapping[str, Any], key: str, name: str) -> str | None:
    """``order[key][name]`` as a non-empty string, "" when absent, None when not sayable."""
    sub = order.get(key)
    if sub is None:
        return ""
    if not isinstance(sub, Mapping):
        return None
    value = sub.get(name)
    if value is None:
        return ""
    return value if isinstance(value, str) and value else None


def typed_order(order: Any) -> Any:
    """The typed ``Order`` saying exactly what the policy reads from Junction's order JSON,
    or None when the JSON holds something the typed message cannot say (invalid input)."""
    from server._gen.orderpolicy.v1 import order_policy_pb2 as pb

    if not isinstance(order, Mapping):
        return None
    out = pb.Order()
    if not isinstance(order.get("id"), str) or not order["id"]:
        return None
    out.id = order["id"]
    if order.get("created_at") is not None:
        created = aware_datetime(order["created_at"])
        if created is None:
            return None
        out.created_at.FromDatetime(created.astimezone(dt.UTC))
    status = order.get("status")
    if status is not None:
        if not isinstance(status, str) or not status:
            return None
        out.status = status
    details, method = _sub(order, "details", "type"), _sub(order, "lab_test", "method")
    if details is None or method is None or _sub(order, "diagnostic_lab_test", "method") != "":
        return None
    out.details_type, out.lab_test_method = details, method
    events = order.get("events")
    if events is not None:
        if not isinstance(events, list):
            return None
        for raw in events:
            event = _event(raw)
            if event is None:
                return None
            out.events.append(event)
    if order.get("last_event") is not None:
        event = _event(order["last_event"])
        if event is None:
            return None
        out.last_event.CopyFrom(event)
    return out


def typed_appointment(appt: Any) -> Any:
    """The typed ``Appointment`` for an appointment JSON, or None when it cannot be said exactly."""
    from server._gen.orderpolicy.v1 import order_policy_pb2 as pb

    if not isinstance(appt, Mapping):
        return None
    out = pb.Appointment()
    for name in ("id", "order_id", "status", "provider", "type"):
        value = appt.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            return None
        setattr(out, name, value)
    if appt.get("start_at") is not None:
        start = aware_datetime(appt["start_at"])
        if start is None:
            return None
        out.start_at.FromDatetime(start.astimezone(dt.UTC))
    return out


def case_request(case: Any, *, typed: bool) -> Any:
    """The ``DecideRequest`` of a bundle test case (``server.cases.Case``), with its order and
    appointment as JSON text or as typed messages; None when the case cannot be said so
    (a ``now`` without offset, raw JSON text for a typed request, ...)."""
    import json

    from server._gen.orderpolicy.v1 import order_policy_pb2 as pb

    actions = {"cancel_order": pb.ACTION_CANCEL_ORDER, "cancel_appointment": pb.ACTION_CANCEL_APPOINTMENT}
    now = aware_datetime(case.now_text)
    if case.action not in actions or now is None:
        return None
    request = pb.DecideRequest(action=actions[case.action])
    request.now.FromDatetime(now.astimezone(dt.UTC))
    if not typed:
        request.order_json = (
            case.order_json if case.order_json is not None else json.dumps(case.order, ensure_ascii=False)
        )
        if case.appointment_json is not None:
            request.appointment_json = case.appointment_json
        elif case.appointment is not None:
            request.appointment_json = json.dumps(case.appointment, ensure_ascii=False)
        return request
    if case.order_json is not None or case.appointment_json is not None:
        return None  # raw JSON text has no typed equivalent
    order = typed_order(case.order)
    appointment = typed_appointment(case.appointment) if case.appointment is not None else None
    if order is None or (case.appointment is not None and appointment is None):
        return None
    request.order.CopyFrom(order)
    if appointment is not None:
        request.appointment.CopyFrom(appointment)
    return request


#: An at-home phlebotomy order with its appointment scheduled, and that appointment
#: (start 2026-03-11T20:00Z): the sample the admin and lifecycle tests decide.
PHLEBOTOMY_ORDER = {
    "id": "o-1",
    "created_at": "2026-03-02T15:00:00+00:00",
    "status": "collecting_sample",
    "details": {"type": "at_home_phlebotomy"},
    "events": [
        {
            "id": 1,
            "created_at": "2026-03-02T15:00:00+00:00",
            "status": "collecting_sample.at_home_phlebotomy.appointment_scheduled",
        }
    ],
}
PHLEBOTOMY_APPOINTMENT = {
    "order_id": "o-1",
    "status": "confirmed",
    "provider": "getlabs",
    "start_at": "2026-03-11T20:00:00+00:00",
}
