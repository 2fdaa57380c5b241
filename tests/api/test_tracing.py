"""serve --otel: spans per RPC, batch and stream message, trace ids in the decision log and logs.

Spans are captured with OpenTelemetry's in-memory exporter. With tracing off (the default)
OpenTelemetry is never imported.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from server._gen.orderpolicy.v1 import order_policy_pb2 as pb
from server._gen.orderpolicy.v1 import order_policy_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

PATIENT = "Okafor-Zyxwv"  # must never reach a span
ORDER = {
    "id": "ord-trace-1",
    "created_at": "2026-03-09T14:03:12+00:00",
    "status": "received",
    "details": {"type": "walk_in_test"},
    "patient_details": {"first_name": "Maya", "last_name": PATIENT, "dob": "1988-07-14"},
    "events": [{"id": 1, "created_at": "2026-03-09T14:03:12+00:00", "status": "received.walk_in_test.ordered"}],
}
REQUEST = pb.DecideRequest(action=pb.ACTION_CANCEL_ORDER, order_json=json.dumps(ORDER), request_id="t-1")
INVALID = pb.DecideRequest(action=pb.ACTION_UNSPECIFIED, order_json=json.dumps(ORDER), request_id="t-2")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@contextlib.contextmanager
def _traced_server(bundle_dir: Path, log_path: Path) -> Iterator[tuple[Any, Any]]:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from server.api import tracing
    from server.app import Server, ServerOptions
    from server.decisionlog import DecisionLog
    from server.registry import Registry

    exporter = InMemorySpanExporter()
    traced = tracing.configure(SimpleSpanProcessor(exporter))
    registry = Registry()
    registry.load(bundle_dir)
    dlog = DecisionLog(str(log_path))
    server = Server(registry, ServerOptions(host="127.0.0.1", port=0, workers=1), decision_log=dlog, tracing=traced)
    server.start()
    try:
        yield server, exporter
    finally:
        server.stop(0).wait(10)
        dlog.close()
        traced.shutdown()


def _attrs(span: Any) -> dict[str, Any]:
    return dict(span.attributes or {})


def _no_patient_data(spans: Any) -> None:
    for span in spans:
        text = json.dumps({k: str(v) for k, v in _attrs(span).items()}) + span.name
        assert PATIENT not in text
        assert "Maya" not in text
        assert "1988" not in text


def test_decide_span_carries_the_decision_and_continues_the_callers_trace(bundle_dir, tmp_path) -> None:
    log_path = tmp_path / "decisions.jsonl"
    with _traced_server(bundle_dir, log_path) as (server, exporter), grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.OrderPolicyServiceStub(channel)
        reply = stub.Decide(REQUEST, timeout=10, metadata=[("traceparent", TRACEPARENT)])
        with pytest.raises(grpc.RpcError) as info:
            stub.Decide(INVALID, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        ok_span, bad_span = exporter.get_finished_spans()
    decision = reply.decision
    assert ok_span.name == "/orderpolicy.v1.OrderPolicyService/Decide"
    assert format(ok_span.context.trace_id, "032x") == TRACE_ID  # the caller's trace goes on
    attrs = _attrs(ok_span)
    assert attrs["orderpolicy.action"] == "cancel_order"
    assert attrs["orderpolicy.outcome"] == pb.Outcome.Name(decision.outcome).removeprefix("OUTCOME_").lower()
    assert attrs["orderpolicy.bundle.revision"] == decision.bundle.revision
    assert attrs["orderpolicy.decision_id"] == decision.decision_id
    bad = _attrs(bad_span)
    assert bad["orderpolicy.error_code"] == "request_invalid"
    assert bad["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "orderpolicy.decision_id" not in bad
    assert format(bad_span.context.trace_id, "032x") != TRACE_ID  # a new trace without traceparent
    _no_patient_data([ok_span, bad_span])
    [entry] = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert entry["decision_id"] == decision.decision_id
    assert entry["trace_id"] == TRACE_ID


def test_batch_span_counts_and_stream_messages_get_their_own_spans(bundle_dir, tmp_path) -> None:
    log_path = tmp_path / "decisions.jsonl"
    with _traced_server(bundle_dir, log_path) as (server, exporter), grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.OrderPolicyServiceStub(channel)
        batch = stub.DecideBatch(pb.DecideBatchRequest(requests=[REQUEST, INVALID, REQUEST]), timeout=10)
        streamed = list(
            stub.DecideStream(iter([pb.DecideStreamRequest(request=r) for r in (REQUEST, INVALID)]), timeout=10)
        )
        spans = exporter.get_finished_spans()
    by_name: dict[str, list[Any]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    [batch_span] = by_name["/orderpolicy.v1.OrderPolicyService/DecideBatch"]
    outcome = pb.Outcome.Name(batch.results[0].decision.outcome).removeprefix("OUTCOME_").lower()
    attrs = _attrs(batch_span)
    assert attrs["orderpolicy.batch.size"] == 3
    assert attrs["orderpolicy.batch.errors"] == 1
    assert attrs[f"orderpolicy.batch.{outcome}"] == 2
    assert list(attrs["orderpolicy.bundle.revision"]) == [batch.results[0].decision.bundle.revision]
    [stream_span] = by_name["/orderpolicy.v1.OrderPolicyService/DecideStream"]
    messages = by_name["DecideStream message"]
    assert len(messages) == 2
    assert all(m.parent is not None and m.parent.span_id == stream_span.context.span_id for m in messages)
    assert _attrs(messages[0])["orderpolicy.decision_id"] == streamed[0].decision.decision_id
    assert _attrs(messages[1])["orderpolicy.error_code"] == "request_invalid"
    _no_patient_data(spans)
    entries = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert len(entries) == 3  # two batch items and one stream message were decisions
    batch_trace = format(batch_span.context.trace_id, "032x")
    stream_trace = format(stream_span.context.trace_id, "032x")
    assert [e["trace_id"] for e in entries] == [batch_trace, batch_trace, stream_trace]


def test_json_log_lines_carry_the_trace_id_of_the_call() -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from server.api import log, tracing

    traced = tracing.configure(SimpleSpanProcessor(InMemorySpanExporter()))
    stream = io.StringIO()
    saved = log.trace_id
    log.configure(stream=stream)
    log.trace_id = traced.trace_id
    try:
        log.event("outside_a_call")
        with traced.provider.get_tracer("test").start_as_current_span("call") as span:
            log.event("inside_a_call", code="x")
        outside, inside = (json.loads(line) for line in stream.getvalue().splitlines())
    finally:
        log.trace_id = saved
        log.configure()
        traced.shutdown()
    assert "trace_id" not in outside
    assert inside["trace_id"] == format(span.get_span_context().trace_id, "032x")


def test_unknown_exporter_is_refused_clearly(monkeypatch) -> None:
    from server.rpcserver import _tracing
    from server.settings import ServeError

    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkinn")
    with pytest.raises(ServeError, match="OTEL_TRACES_EXPORTER `zipkinn` is not supported"):
        _tracing()


def test_tracing_off_imports_no_opentelemetry(bundle_dir) -> None:
    """Without --otel a server answers decisions and OpenTelemetry is never imported."""
    code = f"""
import sys, json, grpc
from server.app import Server, ServerOptions
from server.registry import Registry
from server._gen.orderpolicy.v1 import order_policy_pb2 as pb, order_policy_pb2_grpc as pb_grpc
registry = Registry(); registry.load({str(bundle_dir)!r})
server = Server(registry, ServerOptions(host="127.0.0.1", port=0, workers=1)); server.start()
with grpc.insecure_channel(server.address) as channel:
    reply = pb_grpc.OrderPolicyServiceStub(channel).Decide(
        pb.DecideRequest(action=pb.ACTION_CANCEL_ORDER, order_json={json.dumps(ORDER)!r}), timeout=10)
server.stop(0).wait(5)
assert reply.decision.decision_id
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
print(json.dumps(loaded))
"""
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_otel_without_the_extra_is_refused_clearly(monkeypatch) -> None:
    """--otel where OpenTelemetry is not installed (e.g. the runtime-only image): one clear error."""
    import server.api
    from server.rpcserver import _tracing
    from server.settings import ServeError

    monkeypatch.delitem(sys.modules, "server.api.tracing", raising=False)
    monkeypatch.delattr(server.api, "tracing", raising=False)
    for name in [m for m in sys.modules if m.startswith("opentelemetry")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # import opentelemetry -> ImportError
    with pytest.raises(ServeError, match=r"--otel needs the `otel` extra .*`opentelemetry`"):
        _tracing()
