"""Optional OpenTelemetry tracing (``serve --otel``): imported only when it is on.

With ``--otel`` every RPC gets a server span from the maintained gRPC instrumentation
(``opentelemetry-instrumentation-grpc``, which also continues a caller's ``traceparent``),
and this module adds what the service knows, never patient data:

* ``Decide``: ``orderpolicy.action``, ``orderpolicy.outcome``, ``orderpolicy.bundle.revision``,
  ``orderpolicy.decision_id`` on the RPC span (``orderpolicy.error_code`` when it fails);
* ``DecideBatch``: the batch's span gets ``orderpolicy.batch.size``, the count of each
  outcome and of errors (``orderpolicy.batch.allow``/``deny``/``errors``), and the
  actions and bundle revisions of its decisions;
* ``DecideStream``: one child span per message, with the attributes of a ``Decide``.

The trace id of the call is written to its decision log entries (``trace_id``) and to the
JSON log lines logged during the call. Everything is configured by the standard
``OTEL_*`` environment variables: ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_SAMPLER``/``_ARG``, ``OTEL_BSP_*``, ``OTEL_EXPORTER_OTLP_*`` and
``OTEL_TRACES_EXPORTER`` (``otlp``, the default, over gRPC; ``console``; ``none``).
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.grpc import server_interceptor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanProcessor
from opentelemetry.trace import Status, StatusCode

from server._gen.orderpolicy.v1 import order_policy_pb2 as pb

__all__ = ["Tracing", "configure"]

_SERVICE = "order-policy"
# Server-side gRPC codes that mean the server failed (OpenTelemetry's RPC conventions):
# UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS.
_SERVER_ERRORS = {2, 4, 12, 13, 14, 15}


class TracingError(Exception):
    """Tracing cannot be set up as the environment asks (one line)."""


def _exporter() -> SpanExporter | None:
    name = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if name == "none":
        return None
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise TracingError(
                "OTEL_TRACES_EXPORTER `otlp` needs the `otel` extra: pip install 'order-policy[otel]'"
            ) from None
        return OTLPSpanExporter()
    raise TracingError(f"OTEL_TRACES_EXPORTER `{name}` is not supported: use otlp, console or none")


def configure(processor: SpanProcessor | None = None) -> Tracing:
    """A tracer provider of this process from the ``OTEL_*`` environment (or ``processor``)."""
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", _SERVICE)})
    provider = TracerProvider(resource=resource)  # the sampler comes from OTEL_TRACES_SAMPLER
    if processor is None:
        exporter = _exporter()
        processor = BatchSpanProcessor(exporter) if exporter is not None else None
    if processor is not None:
        provider.add_span_processor(processor)
    return Tracing(provider)


def _name(enum: Any, value: int, prefix: str) -> str:
    return str(enum.Name(value)).removeprefix(prefix).lower()


def _hex(span: Any) -> str:
    context = span.get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""


class Tracing:
    """The hooks the servicer, the decision log and the JSON logs call while tracing is on."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("order_policy")

    def interceptors(self) -> Sequence[Any]:
        """The gRPC server interceptors that open a span per RPC."""
        return [server_interceptor(tracer_provider=self.provider)]

    @staticmethod
    def trace_id() -> str:
        """The current call's trace id (32 hex digits), or "" outside a sampled span."""
        span = trace.get_current_span()
        return _hex(span) if span.is_recording() else ""

    @staticmethod
    def decided(decision: Any) -> None:
        """Describe one decision (a ``pb.Decision``) on the current span."""
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(
                {
                    "orderpolicy.action": _name(pb.Action, decision.action, "ACTION_"),
                    "orderpolicy.outcome": _name(pb.Outcome, decision.outcome, "OUTCOME_"),
                    "orderpolicy.bundle.revision": decision.bundle.revision,
                    "orderpolicy.decision_id": decision.decision_id,
                }
            )

    @staticmethod
    def failed(code: int, reason: str) -> None:
        """Record a failed call (or stream message) on the current span: its gRPC code and error code."""
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes({"orderpolicy.error_code": reason, "rpc.grpc.status_code": code})
            if code in _SERVER_ERRORS:
                span.set_status(Status(StatusCode.ERROR, reason))

    def item(self, result: Any) -> None:
        """Describe one ``DecideResult``/``DecideStreamResponse`` on the current span."""
        if result.HasField("error"):
            self.failed(result.error.code, result.error.reason)
        else:
            self.decided(result.decision)

    @staticmethod
    def batch(results: Sequence[Any]) -> None:
        """Describe a whole DecideBatch (its ``DecideResult`` items) on its span."""
        span = trace.get_current_span()
        if span.is_recording():
            decisions = [r.decision for r in results if not r.HasField("error")]
            outcomes = Counter(_name(pb.Outcome, d.outcome, "OUTCOME_") for d in decisions)
            span.set_attributes(
                {
                    "orderpolicy.batch.size": len(results),
                    "orderpolicy.batch.allow": outcomes.get("allow", 0),
                    "orderpolicy.batch.deny": outcomes.get("deny", 0),
                    "orderpolicy.batch.errors": len(results) - len(decisions),
                    "orderpolicy.action": sorted({_name(pb.Action, d.action, "ACTION_") for d in decisions}),
                    "orderpolicy.bundle.revision": sorted({d.bundle.revision for d in decisions}),
                }
            )

    @contextlib.contextmanager
    def message(self, method: str) -> Iterator[None]:
        """A child span for one message of a stream."""
        with self._tracer.start_as_current_span(f"{method} message", kind=trace.SpanKind.INTERNAL):
            yield

    def shutdown(self) -> None:
        """Export what is left (bounded by the processor's own timeout)."""
        self.provider.shutdown()
