"""Errors -> gRPC statuses with ``google.rpc`` details, and per-item batch errors.

The mapping (``code`` is the stable snake_case error code, sent as ``ErrorInfo.reason``):

============================  ===================  ==============================
error                         gRPC code            details
============================  ===================  ==============================
SnapshotError (request_invalid) INVALID_ARGUMENT   BadRequest field violations
NoBundleError                 UNAVAILABLE          ErrorInfo
NoBundleError (revision_not_loaded)  FAILED_PRECONDITION  ErrorInfo
EvalError (eval_calendar_ended)  FAILED_PRECONDITION  ErrorInfo (the bundle cannot decide it)
anything else                 INTERNAL             generic message; logged
============================  ===================  ==============================

An unexpected error is logged with its stack (never its message, which may quote
patient data) and answered with a generic message.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from server._gen.orderpolicy.v1 import order_policy_pb2 as pb
from server.errors import EvalError, NoBundleError, SnapshotError

__all__ = ["DOMAIN", "Failure", "failure_from", "invalid", "stack_summary"]

DOMAIN = "orderpolicy.v1"
# A pinned revision that is not loaded: retrying the same request will not help.
_PRECONDITION_CODES = frozenset({"revision_not_loaded"})
# The active bundle cannot decide this input (its business-day calendar ends before the
# order's ship day): the message names the bundle setting to extend, never request data.
_BUNDLE_CANNOT_DECIDE = frozenset({"eval_calendar_ended"})


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed request, ready to become a gRPC status or a per-item ``Error``."""

    code: grpc.StatusCode
    reason: str
    message: str
    violations: tuple[tuple[str, str], ...] = ()

    def to_status(self) -> grpc.Status:
        """The rich status for ``context.abort_with_status``."""
        details = []
        if self.violations:
            bad = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in self.violations
                ]
            )
            details.append(_pack(bad))
        details.append(_pack(error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN)))
        proto = status_pb2.Status(code=self.code.value[0], message=self.message, details=details)
        return rpc_status.to_status(proto)

    def to_error(self) -> pb.Error:
        """The per-item error of a batch or stream result."""
        return pb.Error(
            code=self.code.value[0],
            reason=self.reason,
            message=self.message,
            field_violations=[pb.FieldViolation(field=f, description=d) for f, d in self.violations],
        )


def _pack(message: object) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(message)  # type: ignore[arg-type]
    return out


def invalid(field: str, message: str) -> Failure:
    """An INVALID_ARGUMENT failure naming one request field."""
    return Failure(
        grpc.StatusCode.INVALID_ARGUMENT,
        SnapshotError.code,
        f"invalid request: `{field}`: {message}",
        ((field, message),),
    )


INTERNAL = Failure(grpc.StatusCode.INTERNAL, "internal_error", "internal error")
DEADLINE = Failure(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline_exceeded", "deadline exceeded")


def failure_from(exc: BaseException, field: str | None = None) -> Failure:
    """Classify an exception raised while deciding one request.

    ``field`` is the request-level name of a :class:`SnapshotError`'s field (see
    :func:`server.api.convert.request_field`); its own ``field`` when omitted.
    """
    if isinstance(exc, SnapshotError):
        return invalid(field or exc.field, exc.message)
    if isinstance(exc, NoBundleError):
        if exc.code in _PRECONDITION_CODES:
            return Failure(grpc.StatusCode.FAILED_PRECONDITION, exc.code, exc.message)
        return Failure(grpc.StatusCode.UNAVAILABLE, exc.code, exc.message)
    if isinstance(exc, EvalError) and exc.code in _BUNDLE_CANNOT_DECIDE:
        return Failure(grpc.StatusCode.FAILED_PRECONDITION, exc.code, exc.message)
    return INTERNAL


def stack_summary(exc: BaseException) -> list[str]:
    """``file:line in function`` frames of an exception, without its message."""
    return [f"{frame.filename}:{frame.lineno} in {frame.name}" for frame in traceback.extract_tb(exc.__traceback__)]
