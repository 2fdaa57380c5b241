"""Errors of the client: one base class, and a subclass for each status a caller handles apart.

A failed call raises; a failed item of a batch or stream is returned in its place (the same
classes, not raised). ``code`` is the gRPC status name, ``reason`` the service's stable
snake_case error code (``request_invalid``, ``no_bundle``, ...) when it sent one.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DeadlineExceeded",
    "FieldViolation",
    "InvalidArgument",
    "OrderPolicyError",
    "RevisionNotLoaded",
    "Unavailable",
    "error_class",
]


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid field of a request: its path (``order.events[0].status``, ``now``) and what is wrong."""

    field: str
    description: str


class OrderPolicyError(Exception):
    """A call or an item the service did not decide."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "UNKNOWN",
        reason: str = "",
        field_violations: tuple[FieldViolation, ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason
        self.field_violations = tuple(field_violations)

    @property
    def fields(self) -> tuple[str, ...]:
        """The paths of the invalid fields, in order."""
        return tuple(v.field for v in self.field_violations)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r}, reason={self.reason!r})"


class InvalidArgument(OrderPolicyError):
    """The request is invalid (``INVALID_ARGUMENT``); ``field_violations`` say which fields."""


class Unavailable(OrderPolicyError):
    """No server could answer, or none has a bundle loaded (``UNAVAILABLE``), after the retries."""


class DeadlineExceeded(OrderPolicyError):
    """The call's deadline passed (``DEADLINE_EXCEEDED``)."""


class RevisionNotLoaded(OrderPolicyError):
    """The pinned ``bundle_revision`` is not loaded on the server (``FAILED_PRECONDITION``)."""


_BY_CODE: dict[str, type[OrderPolicyError]] = {
    "INVALID_ARGUMENT": InvalidArgument,
    "UNAVAILABLE": Unavailable,
    "DEADLINE_EXCEEDED": DeadlineExceeded,
    "FAILED_PRECONDITION": RevisionNotLoaded,
}


def error_class(code: str) -> type[OrderPolicyError]:
    """The error class of a gRPC status name."""
    return _BY_CODE.get(code, OrderPolicyError)
