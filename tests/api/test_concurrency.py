"""Many clients at once: every decision is the one the core gives alone."""

from __future__ import annotations

import threading

import grpc
import pytest

from server._gen.orderpolicy.v1 import order_policy_pb2 as pb
from server._gen.orderpolicy.v1 import order_policy_pb2_grpc as pb_grpc
from server.errors import SnapshotError
from tests.support.api import bundle_cases, model_key, proto_key, request_for

pytestmark = pytest.mark.integration

THREADS = 16
ROUNDS = 3


def test_sixteen_client_threads_get_every_decision_right(server_address: str, policy) -> None:
    """16 threads, each on its own channel, mixing Decide, DecideBatch and DecideStream."""
    cases = []
    for case in bundle_cases():
        if request_for(case, typed=False) is None:
            continue  # a `now` without offset cannot be sent as a Timestamp
        try:
            cases.append((case, ("decision", model_key(policy.decide(case.snapshot)))))
        except SnapshotError as exc:
            cases.append((case, ("error", exc.field)))
    errors: list[str] = []
    counts = [0] * THREADS
    barrier = threading.Barrier(THREADS)

    def check(case, answer, expected) -> None:
        if expected[0] == "error":
            ok = answer[0] == "error"
        else:
            ok = answer == expected
        if not ok:
            errors.append(f"{case.name}: {answer} != {expected}")

    def client(index: int) -> None:
        with grpc.insecure_channel(server_address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            stub = pb_grpc.OrderPolicyServiceStub(channel)
            barrier.wait(30)
            for round_ in range(ROUNDS):
                mine = cases[(index + round_) % 7 :: 7]
                kind = (index + round_) % 3
                requests = [request_for(c, typed=bool(index % 2)) or request_for(c, typed=False) for c, _ in mine]
                if kind == 0:
                    for (case, expected), request in zip(mine, requests, strict=True):
                        try:
                            answer = ("decision", proto_key(stub.Decide(request, timeout=30).decision))
                        except grpc.RpcError as exc:
                            answer = ("error", exc.code())
                        check(case, answer, expected)
                        counts[index] += 1
                    continue
                if kind == 1:
                    results = stub.DecideBatch(pb.DecideBatchRequest(requests=requests), timeout=30).results
                else:
                    results = list(
                        stub.DecideStream(iter([pb.DecideStreamRequest(request=r) for r in requests]), timeout=30)
                    )
                for (case, expected), result in zip(mine, results, strict=True):
                    answer = (
                        ("decision", proto_key(result.decision))
                        if result.WhichOneof("result") == "decision"
                        else ("error", None)
                    )
                    check(case, answer, expected)
                    counts[index] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert all(c > 0 for c in counts)
    expected = sum(len(cases[(i + r) % 7 :: 7]) for i in range(THREADS) for r in range(ROUNDS))
    assert sum(counts) == expected
