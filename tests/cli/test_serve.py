"""The real ``order-policy serve`` in a subprocess: workers, SIGTERM, ports, metrics, logs."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
import urllib.request

import grpc
import pytest

from server._gen.orderpolicy.v1 import order_policy_pb2 as pb
from server._gen.orderpolicy.v1 import order_policy_pb2_grpc as pb_grpc
from tests.support.servers import free_port, serve_command, serve_process, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PATIENT = "Okafor-Zyxwv"  # must never reach a log line
ORDER = {
    "id": "ord-1",
    "created_at": "2026-03-09T14:03:12+00:00",
    "status": "received",
    "details": {"type": "walk_in_test"},
    "patient_details": {"first_name": "Maya", "last_name": PATIENT, "dob": "1988-07-14"},
    "events": [{"id": 1, "created_at": "2026-03-09T14:03:12+00:00", "status": "received.walk_in_test.ordered"}],
}
REQUEST = pb.DecideRequest(action=pb.ACTION_CANCEL_ORDER, order_json=json.dumps(ORDER))
BAD = pb.DecideRequest(
    action=pb.ACTION_CANCEL_ORDER,
    order_json=json.dumps({**ORDER, "status": f"Not {PATIENT}"}),
)


def _events(log: str) -> list[dict]:
    out = []
    for line in log.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_sigterm_during_load_loses_no_accepted_call(bundle_dir) -> None:
    """Calls in flight at SIGTERM finish; later calls are refused; exit code 0."""
    with serve_process(bundle_dir, "--grace", "20", workers=2) as proc:
        sent_term = threading.Event()
        lock = threading.Lock()
        ok = [0]
        refused: list[str] = []
        wrong: list[str] = []

        def client(index: int) -> None:
            options = [("grpc.use_local_subchannel_pool", 1)]
            with grpc.insecure_channel(proc.address, options=options) as channel:
                stub = pb_grpc.OrderPolicyServiceStub(channel)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    try:
                        if index % 2:
                            results = stub.DecideBatch(
                                pb.DecideBatchRequest(requests=[REQUEST] * 300), timeout=30
                            ).results
                            good = all(r.decision.outcome == pb.OUTCOME_ALLOW for r in results)
                            good = good and len(results) == 300
                        else:
                            response = stub.Decide(REQUEST, timeout=30)
                            good = response.decision.outcome == pb.OUTCOME_ALLOW
                    except grpc.RpcError as exc:
                        with lock:
                            if not sent_term.is_set() or exc.code() != grpc.StatusCode.UNAVAILABLE:
                                wrong.append(f"{exc.code()}: {exc.details()}")
                            else:
                                refused.append(exc.code().name)
                        return
                    with lock:
                        ok[0] += 1
                        if not good:
                            wrong.append("wrong decision")

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        wait_until(lambda: ok[0] >= len(threads), 30, message="clients answered before SIGTERM")
        sent_term.set()
        proc.process.send_signal(signal.SIGTERM)
        exit_code = proc.process.wait(40)
        for t in threads:
            t.join(40)
        log = proc.log()

    assert exit_code == 0, log
    assert wrong == []
    assert len(refused) == len(threads)  # every client was refused in the end
    stopped = [e for e in _events(log) if e["event"] == "server_stopped" and "calls_started" in e]
    assert len(stopped) == 2, log
    started = sum(e["calls_started"] for e in stopped)
    # Every call a worker accepted was answered and reached its client.
    assert ok[0] > 0
    assert started == ok[0], log
    assert sum(e["calls_answered"] for e in stopped) == started


def test_second_server_on_a_taken_port_fails_clearly(bundle_dir) -> None:
    """A second server (one worker or several) on a port in use exits 1 saying so."""
    with serve_process(bundle_dir, workers=1) as first:
        for workers in ("1", "2"):
            second = subprocess.run(
                serve_command(
                    "serve",
                    "--bundle",
                    str(bundle_dir),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(first.port),
                    "--workers",
                    workers,
                ),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert second.returncode == 1, second.stderr
            assert f"port {first.port}" in second.stderr
            assert "already in use" in second.stderr
        with grpc.insecure_channel(first.address) as channel:
            stub = pb_grpc.OrderPolicyServiceStub(channel)
            assert stub.Decide(REQUEST, timeout=10).decision.outcome == pb.OUTCOME_ALLOW
        assert first.terminate() == 0


def test_in_process_server_on_a_taken_port_raises(bundle_dir) -> None:
    """Server() on a port another single-worker server holds raises ServeError."""
    from server.app import ServeError
    from tests.support.servers import running_server, serving

    with serving(bundle_dir) as first:
        with pytest.raises(ServeError, match="already in use"), running_server(bundle_dir, port=first.port):
            pass


def test_metrics_sum_every_worker_and_logs_hold_no_patient_data(bundle_dir) -> None:
    """/metrics counts every decision and error across 2 workers; logs are JSON lines
    without patient data."""
    metrics_port = free_port()
    with serve_process(bundle_dir, "--metrics-port", str(metrics_port), workers=2) as proc:
        for i in range(8):  # several connections, so both workers get some
            with grpc.insecure_channel(proc.address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
                stub = pb_grpc.OrderPolicyServiceStub(channel)
                for _ in range(5):
                    stub.Decide(REQUEST, timeout=10)
                results = stub.DecideBatch(pb.DecideBatchRequest(requests=[REQUEST, BAD]), timeout=10).results
                assert results[1].error.reason == "request_invalid"
                if i == 0:
                    with pytest.raises(grpc.RpcError):
                        stub.Decide(BAD, timeout=10)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            text = r.read().decode()
        assert proc.terminate() == 0
        log = proc.log()

    def value(pattern: str) -> float:
        match = re.search(rf"^{pattern} (\S+)$", text, re.M)
        assert match, pattern
        return float(match.group(1))

    assert value(r'order_policy_decisions_total\{action="cancel_order",outcome="ALLOW"\}') == 48
    assert (
        value(
            r'order_policy_decision_reasons_total\{action="cancel_order",outcome="ALLOW",'
            r'reason="CANCELLABLE_STATE"\}'
        )
        == 48
    )
    assert value(r'order_policy_errors_total\{code="request_invalid"\}') == 9
    assert value(r'order_policy_rpc_duration_seconds_count\{method="Decide"\}') == 41
    assert value(r'order_policy_rpc_duration_seconds_count\{method="DecideBatch"\}') == 8
    assert re.search(r'^order_policy_bundle_info\{.*revision="[^"]+".*\} 1\.0$', text, re.M)
    events = _events(log)
    assert {"bundle_loaded", "workers_started", "server_started", "server_stopped"} <= {e["event"] for e in events}
    assert all(line.startswith("{") for line in log.splitlines() if line.strip()), log
    assert PATIENT not in log
    assert "Maya" not in log


def test_invalid_bundle_exits_3(tmp_path) -> None:
    """serve refuses a bundle that does not load, with exit code 3 and the reason."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.yaml").write_text("format_version: 1\nname: [\n")
    result = subprocess.run(
        serve_command(
            "serve", "--bundle", str(bad), "--host", "127.0.0.1", "--port", str(free_port()), "--workers", "1"
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3, result.stderr
    assert "cannot load bundle" in result.stderr


def test_missing_bundle_exits_1(tmp_path) -> None:
    """A bundle path that does not exist is an I/O failure (exit 1), named in the message."""
    result = subprocess.run(
        serve_command(
            "serve",
            "--bundle",
            str(tmp_path / "nope"),
            "--host",
            "127.0.0.1",
            "--port",
            str(free_port()),
            "--workers",
            "1",
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert f"bundle `{tmp_path / 'nope'}` does not exist" in result.stderr


def test_a_crashed_worker_is_replaced(bundle_dir) -> None:
    """When a worker dies, the parent forks a new one; SIGTERM still exits 0."""
    import os

    with serve_process(bundle_dir, workers=2) as proc:

        def workers() -> set[int]:
            return {e["pid"] for e in _events(proc.log()) if e["event"] == "server_started"}

        # SERVING means one worker answers; the other may still be starting.
        first = wait_until(lambda: len(workers()) >= 2 and workers(), 30, message="two workers started")
        assert len(first) == 2
        os.kill(min(first), signal.SIGKILL)
        wait_until(lambda: len(workers()) >= 3, 30, message="a replacement worker started")
        with grpc.insecure_channel(proc.address) as channel:
            stub = pb_grpc.OrderPolicyServiceStub(channel)
            for _ in range(5):
                assert stub.Decide(REQUEST, timeout=10).decision.outcome == pb.OUTCOME_ALLOW
        assert proc.terminate() == 0, proc.log()
        assert any(e["event"] == "worker_exited" for e in _events(proc.log()))


def test_workers_do_not_outlive_a_killed_parent(bundle_dir) -> None:
    """SIGKILL to the parent: its workers stop too, leaving nothing on the port."""
    import os

    with serve_process(bundle_dir, workers=2) as proc:

        def started() -> set[int]:
            return {e["pid"] for e in _events(proc.log()) if e["event"] == "server_started"}

        pids = wait_until(lambda: len(started()) >= 2 and started(), 30, message="two workers started")
        assert len(pids) == 2
        deadline = time.monotonic() + 30
        proc.process.send_signal(signal.SIGKILL)
        proc.process.wait(10)
        alive = set(pids)
        while alive and time.monotonic() < deadline:
            for pid in list(alive):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    alive.discard(pid)
            time.sleep(0.05)
        assert alive == set()


def test_two_workers_rotate_their_decision_logs_without_losing_a_decision(bundle_dir, tmp_path) -> None:
    """`--workers 2` with a small `--decision-log-max-bytes` under load from 6 clients: each worker
    writes `<log>.wN` and rotates it to `<log>.wN.1`, ...; every answered decision is in exactly one
    line of one file and nothing was dropped."""
    target = tmp_path / "decisions.log"
    metrics_port = free_port()
    with serve_process(
        bundle_dir,
        "--decision-log",
        str(target),
        "--decision-log-max-bytes",
        "8192",
        "--decision-log-backups",
        "500",
        "--metrics-port",
        str(metrics_port),
        workers=2,
    ) as proc:
        ids: list[str] = []
        lock = threading.Lock()
        errors: list[str] = []

        def client() -> None:
            for _ in range(10):  # a fresh connection every 10 calls spreads them over both workers
                with grpc.insecure_channel(proc.address, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
                    stub = pb_grpc.OrderPolicyServiceStub(ch)
                    for _ in range(10):
                        try:
                            decision_id = stub.Decide(REQUEST, timeout=30).decision.decision_id
                        except grpc.RpcError as exc:
                            errors.append(f"{exc.code()}")
                            continue
                        with lock:
                            ids.append(decision_id)

        threads = [threading.Thread(target=client) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        assert proc.terminate() == 0, proc.log()
    assert errors == []
    assert len(ids) == 600
    files = sorted(tmp_path.glob("decisions.log*"))
    names = {f.name for f in files}
    assert "decisions.log" not in names  # with workers, every file names its worker
    for worker in ("w0", "w1"):
        assert {f"decisions.log.{worker}", f"decisions.log.{worker}.1"} <= names, names
    logged = [json.loads(line)["decision_id"] for f in files for line in f.read_text().splitlines()]
    assert sorted(logged) == sorted(ids)
    assert re.search(r"^order_policy_decision_log_dropped_total 0\.0$", metrics, re.M), metrics
