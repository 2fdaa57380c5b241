"""Open DecideStream calls never take the threads unary calls and health need."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server._gen.orderpolicy.v1 import order_policy_pb2 as pb
from server._gen.orderpolicy.v1 import order_policy_pb2_grpc as pb_grpc
from server.api.streams import default_stream_limit
from tests.support.servers import serving, wait_until

pytestmark = pytest.mark.integration

ORDER = {
    "id": "o-1",
    "details": {"type": "walk_in_test"},
    "events": [{"id": 1, "created_at": "2026-03-09T14:03:12+00:00", "status": "received.walk_in_test.ordered"}],
}
REQUEST = pb.DecideRequest(action=pb.ACTION_CANCEL_ORDER, order_json=json.dumps(ORDER))


def _idle(stop: threading.Event) -> Iterator[pb.DecideStreamRequest]:
    """A stream that sends nothing until ``stop``."""
    stop.wait()
    return
    yield  # a generator


def test_idle_streams_four_times_the_threads_leave_unary_calls_and_health_answering(fixture_bundle) -> None:
    """8 threads, 32 idle DecideStream calls open: Decide and the health Check each answer within 1 s;
    the streams beyond the cap are refused at once with RESOURCE_EXHAUSTED."""
    threads = 8
    stop = threading.Event()
    with serving(fixture_bundle, threads=threads) as server, grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.OrderPolicyServiceStub(channel)
        calls = [stub.DecideStream(_idle(stop)) for _ in range(4 * threads)]
        try:
            limit = default_stream_limit(threads)
            assert limit < threads
            wait_until(lambda: server.servicer._streams.open_count == limit, 10, message="streams open")
            refused = wait_until(
                lambda: [c for c in calls if c.done()] if sum(c.done() for c in calls) == len(calls) - limit else None,
                10,
                message="streams refused",
            )
            assert {c.code() for c in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
            assert f"at most {limit} per worker" in refused[0].details()
            for _ in range(3):
                start = time.monotonic()
                assert stub.Decide(REQUEST, timeout=1).decision.decision_id
                health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                assert health.status == health_pb2.HealthCheckResponse.SERVING
                assert time.monotonic() - start < 1
        finally:
            stop.set()
            for call in calls:
                call.cancel()


def test_an_idle_stream_is_cancelled_and_its_slot_freed(fixture_bundle) -> None:
    """With a 0.5 s idle timeout, a stream that sends nothing ends CANCELLED; one that keeps sending
    lives on, and a new stream finds a slot again."""
    stop = threading.Event()
    with (
        serving(fixture_bundle, threads=4, max_streams=1, stream_idle_timeout=0.5) as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        stub = pb_grpc.OrderPolicyServiceStub(channel)
        idle = stub.DecideStream(_idle(stop))
        try:
            with pytest.raises(grpc.RpcError) as info:
                next(idle)
            assert info.value.code() == grpc.StatusCode.CANCELLED
            assert server.servicer._streams.cancelled == 1
        finally:
            stop.set()

        def busy() -> Iterator[pb.DecideStreamRequest]:
            for _ in range(8):  # 8 messages 0.2 s apart: 1.6 s in all, never 0.5 s idle
                yield pb.DecideStreamRequest(request=REQUEST)
                time.sleep(0.2)

        replies = list(stub.DecideStream(busy(), timeout=10))
        assert len(replies) == 8
        assert all(r.decision.decision_id for r in replies)
        assert server.servicer._streams.cancelled == 1
