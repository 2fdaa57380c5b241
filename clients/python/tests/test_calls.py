"""The client's behaviour against real servers: typed results, invalid input, deadlines,
restarts hidden by retries, round-robin over replicas."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from cases_support import case_request
from conftest import bundle_copy

from order_policy_client import (
    SERVICE_CONFIG,
    Client,
    DeadlineExceeded,
    Decision,
    InvalidArgument,
    OrderPolicyError,
    Request,
    RevisionNotLoaded,
    normalize_target,
)
from order_policy_client.testing import ServerProcess, running_server


def _allowed_case(cases: list[dict[str, Any]]) -> dict[str, Any]:
    return next(c for c in cases if c["expect"].get("outcome") == "ALLOW" and c["order_json"] is None)


def test_decision_is_typed_and_reports_its_instant(client: Client, cases: list[dict[str, Any]]) -> None:
    """A decision has its outcome, codes, bundle, id, action and the `now` it was evaluated at."""
    case = _allowed_case(cases)
    now = dt.datetime.fromisoformat(case["now"])
    got = client.decide(case["order"], case["appointment"], case["action"], now=now, explain=True)
    assert isinstance(got, Decision)
    assert got.allowed
    assert got.outcome == "ALLOW"
    assert got.evaluated_at == now
    assert got.evaluated_at.tzinfo is not None
    assert got.action == case["action"]
    assert got.order_id == case["order"]["id"]
    assert got.bundle.revision
    assert len(got.bundle.digest) >= 32
    assert got.decision_id
    assert sorted(r.code for r in got.reasons) == sorted(case["expect"]["reasons"])
    assert got.explanation is not None
    assert got.explanation.matched_rules
    assert isinstance(got.explanation.facts, dict)
    assert got.explanation.facts


def test_now_as_text_and_as_datetime_in_another_zone_decide_alike(client: Client, cases: list[dict[str, Any]]) -> None:
    """`now` as ISO text, or as an aware datetime in any zone, is the same instant."""
    case = _allowed_case(cases)
    instant = dt.datetime.fromisoformat(case["now"])
    elsewhere = instant.astimezone(dt.timezone(dt.timedelta(hours=-5)))
    a = client.decide(case["order"], case["appointment"], case["action"], now=case["now"])
    b = client.decide(case["order"], case["appointment"], case["action"], now=elsewhere)
    assert a.evaluated_at == b.evaluated_at == instant
    assert (a.outcome, a.reasons, a.follow_ups) == (b.outcome, b.reasons, b.follow_ups)


def test_invalid_order_raises_invalid_argument_with_the_field(client: Client) -> None:
    """Order text that is not JSON raises InvalidArgument naming `order`, with the service's reason."""
    with pytest.raises(InvalidArgument) as caught:
        client.decide("{not json", now="2026-03-10T12:00:00Z")
    assert caught.value.code == "INVALID_ARGUMENT"
    assert caught.value.reason == "request_invalid"
    assert "order" in caught.value.fields
    assert all(v.description for v in caught.value.field_violations)


def test_input_the_client_cannot_send_raises_before_calling(client: Client, cases: list[dict[str, Any]]) -> None:
    """An unknown action (with a hint), a `now` without offset or a non-JSON value fail locally."""
    order = _allowed_case(cases)["order"]
    with pytest.raises(InvalidArgument, match="did you mean `cancel_order`") as caught:
        client.decide(order, action="cancel_ordr")
    assert caught.value.fields == ("action",)
    with pytest.raises(InvalidArgument) as caught:
        client.decide(order, now=dt.datetime(2026, 3, 10, 12, 0))
    assert caught.value.fields == ("now",)
    with pytest.raises(InvalidArgument) as caught:
        client.decide(order, now="yesterday")
    assert caught.value.fields == ("now",)
    with pytest.raises(InvalidArgument) as caught:
        client.decide({"id": object()})
    assert caught.value.fields == ("order",)


def test_an_invalid_item_of_a_batch_or_stream_is_answered_in_its_place(
    client: Client, cases: list[dict[str, Any]]
) -> None:
    """Batch and stream answer an invalid item with its error and still decide the others."""
    good = case_request(_allowed_case(cases))
    bad_server = Request(order="[]", now=good.now)
    bad_local = Request(order=good.order, now="2026-03-10T12:00:00")  # no offset
    for results in (
        client.decide_batch([good, bad_local, bad_server, good]),
        list(client.decide_stream([good, bad_local, bad_server, good])),
    ):
        assert [type(r).__name__ for r in results] == ["Decision", "InvalidArgument", "InvalidArgument", "Decision"]
        assert results[1].fields == ("now",)  # type: ignore[union-attr]
        assert results[2].fields == ("order",)  # type: ignore[union-attr]


def test_pinning_a_revision_that_is_not_loaded_fails(client: Client, cases: list[dict[str, Any]]) -> None:
    """bundle_revision pins a revision; one the server does not hold raises RevisionNotLoaded."""
    case = _allowed_case(cases)
    active = client.decide(case["order"], case["appointment"], case["action"], case["now"])
    pinned = client.decide(
        case["order"], case["appointment"], case["action"], case["now"], bundle_revision=active.bundle.revision
    )
    assert pinned.bundle == active.bundle
    with pytest.raises(RevisionNotLoaded):
        client.decide(case["order"], now=case["now"], bundle_revision="no-such-revision")


def test_a_deadline_expires_when_the_server_does_not_answer(bundle: Path, cases: list[dict[str, Any]]) -> None:
    """A server that stops answering (SIGSTOP) fails the call with DeadlineExceeded at its deadline."""
    case = _allowed_case(cases)
    with running_server(bundle) as server, Client(server.address, timeout=0.5) as client:
        assert client.decide(case["order"], now=case["now"]).outcome
        server.signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded) as caught:
                client.decide(case["order"], now=case["now"])
            elapsed = time.monotonic() - started
        finally:
            server.signal(signal.SIGCONT)
        assert caught.value.code == "DEADLINE_EXCEEDED"
        assert 0.4 < elapsed < 5.0
        assert client.decide(case["order"], now=case["now"], timeout=10).outcome


def test_a_call_with_nobody_listening_ends_at_its_deadline() -> None:
    """With no server at all the call waits for one only until its deadline."""
    from order_policy_client.testing import free_port

    with Client(f"127.0.0.1:{free_port()}", timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(OrderPolicyError) as caught:
            client.decide({"id": "x"})
        assert time.monotonic() - started < 5.0
    assert caught.value.code in {"DEADLINE_EXCEEDED", "UNAVAILABLE"}


def test_a_server_restarted_mid_run_is_not_seen_by_the_caller(bundle: Path, cases: list[dict[str, Any]]) -> None:
    """Calls keep succeeding while the server is killed and started again on its port."""
    case = _allowed_case(cases)
    failures: list[str] = []
    done = threading.Event()
    count = [0, 0]  # calls before, after the restart
    phase = [0]
    with running_server(bundle) as server, Client(server.address, timeout=30.0) as client:

        def caller() -> None:
            while not done.is_set():
                try:
                    client.decide(case["order"], case["appointment"], case["action"], case["now"])
                    count[phase[0]] += 1
                except Exception as exc:
                    failures.append(repr(exc))

        threads = [threading.Thread(target=caller) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.5)
            server.restart(crash=True)
            phase[0] = 1
            time.sleep(1.0)
        finally:
            done.set()
            for t in threads:
                t.join(60)
    assert failures == []
    assert count[0] > 0
    assert count[1] > 0


def test_calls_are_spread_round_robin_over_replicas(bundle: Path, tmp_path: Path, cases: list[dict[str, Any]]) -> None:
    """With two servers in the target, calls alternate between them (each one's revision is seen)."""
    case = _allowed_case(cases)
    other = bundle_copy(bundle, tmp_path / "other", "replica-b")
    with running_server(bundle) as a, running_server(other) as b:
        with Client(f"ipv4:{a.address},{b.address}", timeout=10.0) as client:
            for _ in range(10):  # both connections up
                client.decide(case["order"], now=case["now"])
            seen = [client.decide(case["order"], now=case["now"]).bundle.revision for _ in range(40)]
    assert "replica-b" in seen
    assert min(seen.count(r) for r in set(seen)) >= 15, seen


def test_service_config_balances_round_robin_and_retries_unavailable() -> None:
    """The shipped service config: round_robin, retries only on UNAVAILABLE, waits for a ready server."""
    assert SERVICE_CONFIG["loadBalancingConfig"] == [{"round_robin": {}}]
    (method,) = SERVICE_CONFIG["methodConfig"]
    assert method["name"] == [{"service": "orderpolicy.v1.OrderPolicyService"}]
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert 2 <= method["retryPolicy"]["maxAttempts"] <= 5
    assert method["waitForReady"] is True
    json.dumps(SERVICE_CONFIG)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("order-policy.ns.svc:50051", "dns:///order-policy.ns.svc:50051"),
        ("dns:///order-policy:50051", "dns:///order-policy:50051"),
        ("ipv4:10.0.0.1:50051,10.0.0.2:50051", "ipv4:10.0.0.1:50051,10.0.0.2:50051"),
        ("unix:/run/order-policy.sock", "unix:/run/order-policy.sock"),
        ("localhost:50051", "dns:///localhost:50051"),
    ],
)
def test_targets_resolve_every_address_by_dns(target: str, expected: str) -> None:
    """A plain host:port becomes a dns:/// target, so every address of a headless Service is used."""
    assert normalize_target(target) == expected


def test_a_client_refuses_a_missing_deadline() -> None:
    """There is no way to make a call without a deadline."""
    with pytest.raises(ValueError, match="timeout"):
        Client("127.0.0.1:1", timeout=0)


def test_health_reports_serving(server: ServerProcess) -> None:
    """health() says SERVING once the server has its bundle."""
    with Client(server.address) as client:
        assert client.health() == "SERVING"


def test_tls_server_is_reached_with_its_root_and_refused_without(
    bundle: Path, tmp_path: Path, cases: list[dict[str, Any]]
) -> None:
    """tls= credentials reach a TLS server; a plaintext client or an unknown root gets no decision."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    trusted = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    case = _allowed_case(cases)
    with running_server(bundle, args=["--tls-cert", str(cert), "--tls-key", str(key)], tls=trusted) as server:
        with Client(server.address, tls=trusted, timeout=10.0) as client:
            assert client.decide(case["order"], now=case["now"]).outcome == "ALLOW"
        for tls in (False, True):  # plaintext; TLS trusting only the system's roots
            with Client(server.address, tls=tls, timeout=1.0) as client:
                with pytest.raises(OrderPolicyError) as caught:
                    client.decide(case["order"], now=case["now"])
                assert caught.value.code in {"UNAVAILABLE", "DEADLINE_EXCEEDED"}


def test_the_client_environment_has_nothing_of_the_server() -> None:
    """The client runs without the server package, durable_rules or googleapis packages."""
    import importlib.util

    for name in ("server", "durable", "durable_rules_engine", "grpc_status", "grpc_health"):
        assert importlib.util.find_spec(name) is None, name
