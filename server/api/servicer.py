"""``orderpolicy.v1.OrderPolicyService``: request -> snapshot -> active policy -> proto.

The servicer owns no policy logic. It takes the active policy from the registry per
request (so a reload applies to the next request), converts with ``convert``, maps
errors with ``status`` and counts with ``metrics``. Batch and stream items fail one by
one; only an oversized batch, a missing bundle or an expired deadline fails a call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import grpc

from server._gen.orderpolicy.v1 import order_policy_pb2 as pb
from server._gen.orderpolicy.v1 import order_policy_pb2_grpc as pb_grpc
from server.api import convert, log, status
from server.api.metrics import METRICS, Metrics
from server.api.streams import StreamSlots
from server.api.wire import UndecodableRequest, add_servicer
from server.decisionlog import DecisionLog, differs
from server.errors import NoBundleError, SnapshotError
from server.model import Decision

__all__ = ["OrderPolicyServicer", "add_to_server"]

_perf = time.perf_counter
_monotonic = time.monotonic


class OrderPolicyServicer(pb_grpc.OrderPolicyServiceServicer):
    """Answers Decide, DecideBatch and DecideStream from ``registry.active()``."""

    def __init__(
        self,
        registry: Any,
        *,
        max_batch: int = 1000,
        metrics: Metrics = METRICS,
        shadow: Callable[[], Any] | None = None,
        decision_log: DecisionLog | None = None,
        tracing: Any = None,
        max_streams: int = 24,
        stream_idle_timeout: float | None = 60.0,
        capture: Any = None,
    ) -> None:
        self._registry = registry
        self._streams = StreamSlots(max_streams, stream_idle_timeout, metrics.error)
        self._tracing = tracing  # server.api.tracing.Tracing with --otel; None costs nothing
        self._shadow = shadow
        self._decision_log = decision_log
        self._capture = capture  # server.workbench.capture.Capture with --capture
        self._max_batch = max_batch
        self._metrics = metrics
        self._lock = threading.Lock()
        # Calls (stream messages) taken on and answered, and calls refused while
        # draining: the shutdown log line proves no accepted call was lost.
        self.calls_started = 0
        self.calls_answered = 0
        self.calls_refused = 0
        self.draining = False
        self._last_refusal = 0.0

    def drain(self, timeout: float, quiet: float = 0.2) -> bool:
        """Refuse new calls (UNAVAILABLE) and wait until in-flight calls are answered.

        gRPC's own shutdown cancels calls that reached the server but were not yet
        handed to a thread (the client sees CANCELLED, which it will not retry), so
        the server first answers new calls UNAVAILABLE itself, while still taking
        them, and returns once the calls it took on are done and no call has come
        for ``quiet`` seconds (clients got their refusal), or after ``timeout``.
        """
        self.draining = True
        self._last_refusal = now = time.monotonic()
        deadline = now + timeout
        while self.calls_started != self.calls_answered or time.monotonic() - self._last_refusal < quiet:
            if time.monotonic() >= deadline:
                return self.calls_started == self.calls_answered
            time.sleep(0.005)
        return True

    def _refuse(self, context: grpc.ServicerContext) -> None:
        with self._lock:
            self.calls_refused += 1
            self._last_refusal = time.monotonic()
        self._metrics.error("shutting_down")
        context.abort(grpc.StatusCode.UNAVAILABLE, "server is shutting down: retry")

    # -- one request -----------------------------------------------------------------

    def _decide(self, request: pb.DecideRequest, tally: Counter[Any] | None = None) -> Decision:
        """Decide one request; raises SnapshotError, NoBundleError or anything.

        With ``tally`` (a batch), the decision is counted there and the batch adds its
        counts to the metrics once, instead of one metrics update per item.
        """
        # INVARIANT: one decider per request, so a reload never mixes two revisions.
        snapshot = convert.snapshot_from_request(request)
        start = _perf()
        # The registry retries when a swap retires the revision between lookup and use.
        decision: Decision = self._registry.decide(snapshot, request.bundle_revision)
        if tally is None:
            self._metrics.decision(decision.action, decision.outcome, [r.code for r in decision.reasons])
        else:
            tally[decision.action, decision.outcome, tuple([r.code for r in decision.reasons])] += 1
        shadow = self._shadow_decision(snapshot, decision) if self._shadow is not None else None
        if self._decision_log is not None:
            trace_id = self._tracing.trace_id() if self._tracing is not None else ""
            self._decision_log.record(decision, convert.input_parts(request), (_perf() - start) * 1e6, shadow, trace_id)
        if self._capture is not None:
            self._capture.record(decision, snapshot)
        return decision

    def _shadow_decision(self, snapshot: Any, decision: Decision) -> Decision | None:
        """Decide again with the shadow candidate (never returned); count differences."""
        candidate = self._shadow() if self._shadow is not None else None
        if candidate is None:
            return None
        try:
            # The same instant as the live decision, so only the rules can differ.
            shadow: Decision = candidate.decide(replace(snapshot, now=decision.now))
        except Exception:
            self._metrics.error("shadow_failed")
            return None
        self._metrics.shadow_decisions.labels(str(differs(decision, shadow)).lower()).inc()
        return shadow

    def _undecodable(self, request: UndecodableRequest) -> status.Failure:
        """INVALID_ARGUMENT for bytes protobuf refused (invalid UTF-8 in a string field), counted."""
        if request.field:
            failure = status.invalid(request.field, request.message)
        else:
            failure = status.Failure(
                grpc.StatusCode.INVALID_ARGUMENT, SnapshotError.code, f"invalid request: {request.message}"
            )
        self._metrics.error(failure.reason)
        return failure

    def _failure(self, exc: Exception, request: pb.DecideRequest, method: str) -> status.Failure:
        field = None
        if isinstance(exc, SnapshotError):
            field = convert.request_field(exc.field, request)
        failure = status.failure_from(exc, field)
        self._metrics.error(failure.reason)
        if failure is status.INTERNAL:
            log.event(
                "rpc_internal_error",
                logging.ERROR,
                method=method,
                error_type=type(exc).__name__,
                stack=status.stack_summary(exc),
            )
        return failure

    # -- RPCs ---------------------------------------------------------------------------

    def Decide(
        self, request: pb.DecideRequest | UndecodableRequest, context: grpc.ServicerContext
    ) -> pb.DecideResponse:
        if self.draining:
            self._refuse(context)
        if isinstance(request, UndecodableRequest):
            context.abort_with_status(self._undecodable(request).to_status())
            raise AssertionError("unreachable: abort_with_status raises")
        start = _perf()
        self._started()
        try:
            if _expired(context):
                failure = status.DEADLINE
                self._metrics.error(failure.reason)
            else:
                try:
                    decision = self._decide(request)
                    response = pb.DecideResponse(request_id=request.request_id)
                    convert.fill_decision(response.decision, decision, explain=request.explain)
                except Exception as exc:
                    failure = self._failure(exc, request, "Decide")
                else:
                    if self._tracing is not None:
                        self._tracing.decided(response.decision)
                    return response
        finally:
            self._answered()
            self._metrics.observe("Decide", _perf() - start)
        if self._tracing is not None:
            self._tracing.failed(failure.code.value[0], failure.reason)
        context.abort_with_status(failure.to_status())
        raise AssertionError("unreachable: abort_with_status raises")

    def DecideBatch(
        self, request: pb.DecideBatchRequest | UndecodableRequest, context: grpc.ServicerContext
    ) -> pb.DecideBatchResponse:
        if self.draining:
            self._refuse(context)
        if isinstance(request, UndecodableRequest):
            context.abort_with_status(self._undecodable(request).to_status())
            raise AssertionError("unreachable: abort_with_status raises")
        start = _perf()
        self._started()
        try:
            failure = self._batch_failure(request, context)
            if failure is None:
                if self._registry.active() is None:
                    failure = status.failure_from(NoBundleError("no policy bundle is loaded"))
                    self._metrics.error(failure.reason)
            if failure is None:
                self._metrics.batch_size.observe(len(request.requests))
                response = pb.DecideBatchResponse()
                tally: Counter[Any] = Counter()
                try:
                    for i, item in enumerate(request.requests):
                        # The deadline is looked at every 8 items (about 0.2 ms of work).
                        if not i & 7 and _expired(context):
                            failure = status.DEADLINE
                            self._metrics.error(failure.reason)
                            break
                        self._result(item, response.results.add(), "DecideBatch", tally)
                    else:
                        if self._tracing is not None:
                            self._tracing.batch(response.results)
                        return response
                finally:
                    self._metrics.count_decisions(tally)
        finally:
            self._answered()
            self._metrics.observe("DecideBatch", _perf() - start)
        context.abort_with_status(failure.to_status())
        raise AssertionError("unreachable: abort_with_status raises")

    def DecideStream(
        self,
        request_iterator: Iterator[pb.DecideStreamRequest | UndecodableRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[pb.DecideStreamResponse]:
        if self.draining:
            self._refuse(context)
        slot = self._streams.open(context)
        if slot is None:
            self._metrics.error("too_many_streams")
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many open streams: at most {self._streams.limit} per worker; retry later, or use DecideBatch",
            )
        try:
            for message in request_iterator:
                slot[1] = _monotonic()  # not idle
                if isinstance(message, UndecodableRequest):
                    yield pb.DecideStreamResponse(error=self._undecodable(message).to_error())
                    continue
                if self._tracing is not None:
                    with self._tracing.message("DecideStream"):
                        response = self._stream_item(message)
                        self._tracing.item(response)
                else:
                    response = self._stream_item(message)
                yield response
        except grpc.RpcError:
            return  # cancelled (by the client, or here when idle too long): nothing to answer
        finally:
            self._streams.close(slot)

    def _stream_item(self, message: pb.DecideStreamRequest) -> pb.DecideStreamResponse:
        start = _perf()
        self._started()
        try:
            return self._result(message.request, pb.DecideStreamResponse(), "DecideStream")
        finally:
            self._answered()
            self._metrics.observe("DecideStream", _perf() - start)

    # -- helpers ------------------------------------------------------------------------

    def _result(self, request: pb.DecideRequest, out: Any, method: str, tally: Counter[Any] | None = None) -> Any:
        """Fill ``out`` (a DecideResult or DecideStreamResponse) with the decision or the item's error."""
        out.request_id = request.request_id
        try:
            decision = self._decide(request, tally)
            convert.fill_decision(out.decision, decision, explain=request.explain)
        except Exception as exc:
            out.error.CopyFrom(self._failure(exc, request, method).to_error())
        return out

    def _batch_failure(self, request: pb.DecideBatchRequest, context: grpc.ServicerContext) -> status.Failure | None:
        if _expired(context):
            self._metrics.error(status.DEADLINE.reason)
            return status.DEADLINE
        if len(request.requests) > self._max_batch:
            failure = status.invalid(
                "requests",
                f"a batch holds at most {self._max_batch} requests, not {len(request.requests)}",
            )
            self._metrics.error(failure.reason)
            return failure
        return None

    def _started(self) -> None:
        with self._lock:
            self.calls_started += 1

    def _answered(self) -> None:
        with self._lock:
            self.calls_answered += 1


def _expired(context: grpc.ServicerContext) -> bool:
    """True when the client's deadline has passed (its answer would be wasted)."""
    remaining = context.time_remaining()
    return remaining is not None and remaining <= 0


def add_to_server(servicer: OrderPolicyServicer, server: grpc.Server) -> None:
    """Register the servicer, decoding requests so that bytes protobuf refuses (invalid
    UTF-8 in ``order_json``, ...) reach it as INVALID_ARGUMENT naming the field, not as
    gRPC's own INTERNAL."""
    add_servicer(
        pb.DESCRIPTOR.services_by_name["OrderPolicyService"],
        servicer,
        server,
        {
            "Decide": (pb.DecideRequest, pb.DecideResponse, False, ""),
            "DecideBatch": (pb.DecideBatchRequest, pb.DecideBatchResponse, False, ""),
            # A stream item's error names the field of its DecideRequest, as Decide does.
            "DecideStream": (pb.DecideStreamRequest, pb.DecideStreamResponse, True, "request."),
        },
    )
