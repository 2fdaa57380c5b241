"""server.testing.capture_decisions: what a library user's own tests see."""

from __future__ import annotations

import datetime as dt
import json
import threading

import grpc

from server import decide
from server._gen.orderpolicy.v1 import order_policy_pb2 as pb
from server._gen.orderpolicy.v1 import order_policy_pb2_grpc as pb_grpc
from server.model import Snapshot
from server.registry import build_decider
from server.testing import capture_decisions
from tests.support.servers import running_server

NOW = dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC)


def order(order_id: str) -> dict:
    return {
        "id": order_id,
        "created_at": "2026-03-09T14:03:12+00:00",
        "status": "received",
        "details": {"type": "walk_in_test"},
        "events": [{"id": 1, "created_at": "2026-03-09T14:03:12+00:00", "status": "received.walk_in_test.ordered"}],
    }


def test_decisions_made_inside_the_block_are_captured_in_order_and_none_after(fixture_bundle):
    """Only the decisions made while the block is open, in order, nested blocks each seeing theirs."""
    decider = build_decider(fixture_bundle)
    try:
        decider.decide(Snapshot("cancel_order", order("before"), None, NOW))
        with capture_decisions() as outer:
            decider.decide(Snapshot("cancel_order", order("a"), None, NOW))
            with capture_decisions() as inner:
                decider.decide(Snapshot("cancel_order", order("b"), None, NOW))
            decider.decide(Snapshot("cancel_order", order("c"), None, NOW))
        decider.decide(Snapshot("cancel_order", order("after"), None, NOW))
    finally:
        decider.close()
    assert [d.order_id for d in outer] == ["a", "b", "c"]
    assert [d.order_id for d in inner] == ["b"]
    assert decide.observers == ()


def test_decisions_from_other_threads_and_the_server_are_captured(fixture_bundle):
    """A served Decide and eight deciding threads all land in the capture."""
    decider = build_decider(fixture_bundle)
    with running_server(fixture_bundle) as address, capture_decisions() as seen:
        threads = [
            threading.Thread(target=decider.decide, args=(Snapshot("cancel_order", order(f"t{i}"), None, NOW),))
            for i in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with grpc.insecure_channel(address) as channel:
            reply = pb_grpc.OrderPolicyServiceStub(channel).Decide(
                pb.DecideRequest(action=pb.ACTION_CANCEL_ORDER, order_json=json.dumps(order("served"))), timeout=10
            )
    decider.close()
    assert sorted(d.order_id for d in seen) == sorted([f"t{i}" for i in range(8)] + ["served"])
    served = next(d for d in seen if d.order_id == "served")
    assert served.outcome == pb.Outcome.Name(reply.decision.outcome).removeprefix("OUTCOME_")


def test_an_exception_in_the_block_still_ends_the_capture(fixture_bundle):
    """Leaving the block by an exception removes the capture too."""
    try:
        with capture_decisions():
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert decide.observers == ()
