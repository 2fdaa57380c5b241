"""Test helpers shipped with the service: real servers on free loopback ports.

``running_server(bundle_dir)`` starts the real gRPC server in this process on
``127.0.0.1`` port 0 and yields its address; ``serving(...)`` yields the
:class:`server.app.Server` itself (to load a bundle later, read counters).
``serve_process(bundle_dir, ...)`` runs the real ``order-policy serve`` command in a
subprocess on a free loopback port and waits until it reports SERVING.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

__all__ = [
    "ServeProcess",
    "free_port",
    "running_server",
    "serve_process",
    "serving",
    "aware_datetime",
    "case_request",
    "typed_appointment",
    "typed_order",
    "wait_serving",
]

_REPO = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def serving(bundle_dir: str | Path | None, **opts: Any) -> Iterator[Any]:
    """A started in-process :class:`server.app.Server` on 127.0.0.1, port 0 by default.

    ``bundle_dir=None`` starts with no bundle (health NOT_SERVING, calls UNAVAILABLE).
    ``opts`` are :class:`server.app.ServerOptions` fields.
    """
    from server.app import Server, ServerOptions
    from server.registry import Registry

    registry = Registry()
    if bundle_dir is not None:
        registry.load(bundle_dir)
    options = ServerOptions(**{"host": "127.0.0.1", "port": 0, "workers": 1, **opts})
    server = Server(registry, options)
    server.start()
    try:
        yield server
    finally:
        server.stop(0).wait(10)


@contextlib.contextmanager
def running_server(bundle_dir: str | Path | None, **opts: Any) -> Iterator[str]:
    """Start the real server in-process on 127.0.0.1 port 0; yield ``host:port``."""
    with serving(bundle_dir, **opts) as server:
        yield server.address


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the OS's choice for port 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_serving(
    address: str,
    timeout: float = 30.0,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
    alive: Any = None,
) -> None:
    """Poll the health service of ``address`` until SERVING; TimeoutError otherwise."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError(f"server at {address} exited before serving")
        channel = (
            grpc.secure_channel(address, credentials, options=list(options))
            if credentials is not None
            else grpc.insecure_channel(address, options=list(options))
        )
        with channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1.0
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = reply.status
            except grpc.RpcError as exc:
                last = exc.code()
        time.sleep(0.05)
    raise TimeoutError(f"server at {address} not SERVING after {timeout} s (last: {last})")


@dataclass
class ServeProcess:
    """A running ``order-policy serve`` subprocess."""

    process: subprocess.Popen[bytes]
    address: str
    port: int
    log_path: Path
    args: list[str] = field(default_factory=list)

    def log(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 30.0) -> int:
        """Send SIGTERM and wait for the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


def serve_command(*args: str) -> list[str]:
    """The argv that runs ``order-policy`` with ``args`` from this checkout."""
    code = "import sys; from server.cli import main; sys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code, *args]


@contextlib.contextmanager
def serve_process(
    bundle_dir: str | Path,
    *args: str,
    workers: int = 1,
    wait: bool = True,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
) -> Iterator[ServeProcess]:
    """Run ``order-policy serve`` on a free 127.0.0.1 port; yield when it is SERVING.

    ``args`` are extra ``serve`` flags. The process is killed on exit if still running.
    """
    port = free_port()
    argv = serve_command(
        "serve", "--bundle", str(bundle_dir), "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers), *args,
    )
    with tempfile.TemporaryDirectory(prefix="order-policy-serve-") as tmp:
        log_path = Path(tmp) / "server.log"
        full_env = {**os.environ, "PYTHONPATH": str(_REPO), **(env or {})}
        full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        with open(log_path, "wb") as out:
            process = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
                argv, cwd=_REPO, stdout=out, stderr=subprocess.STDOUT, env=full_env,
                start_new_session=True,  # its own process group: cleanup reaches every worker
            )
        handle = ServeProcess(process, f"127.0.0.1:{port}", port, log_path, argv)
        try:
            if wait:
                wait_serving(handle.address, timeout, alive=lambda: process.poll() is None)
            yield handle
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the parent and any worker left
            process.wait(10)


# -- typed inputs: Junction's JSON as the typed messages of the API -------------------


def aware_datetime(value: Any) -> dt.datetime | None:
    """A JSON timestamp with an offset as an aware datetime, else None."""
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.utcoffset() is not None else None


def _event(raw: Any) -> Any:
    from server._gen.orderpolicy.v1 import order_policy_pb2 as pb

    if not isinstance(raw, Mapping):
        return None
    ev_id, created, status = raw.get("id"), aware_datetime(raw.get("created_at")), raw.get("status")
    # Typed zero values mean "absent": an empty status or id 0 cannot be said typed.
    if type(ev_id) is not int or ev_id <= 0 or created is None or not isinstance(status, str) \
            or not status:
        return None
    event = pb.OrderEvent(id=ev_id, status=status)
    event.created_at.FromDatetime(created.astimezone(dt.UTC))
    return event


def _sub(order: Mapping[str, Any], key: str, name: str) -> str | None:
    """``order[key][name]`` as a non-empty string, "" when absent, None when not sayable."""
    sub = order.get(key)
    if sub is None:
        return ""
    if not isinstance(sub, Mapping):
        return None
    value = sub.get(name)
    if value is None:
        return ""
    return value if isinstance(value, str) and value else None


def typed_order(order: Any) -> Any:
    """The typed ``Order`` saying exactly what the policy reads from Junction's order JSON,
    or None when the JSON holds something the typed message cannot say (invalid input)."""
    from server._gen.orderpolicy.v1 import order_policy_pb2 as pb

    if not isinstance(order, Mapping):
        return None
    out = pb.Order()
    if not isinstance(order.get("id"), str) or not order["id"]:
        return None
    out.id = order["id"]
    if order.get("created_at") is not None:
        created = aware_datetime(order["created_at"])
        if created is None:
            return None
        out.created_at.FromDatetime(created.astimezone(dt.UTC))
    status = order.get("status")
    if status is not None:
        if not isinstance(status, str) or not status:
            return None
        out.status = status
    details, method = _sub(order, "details", "type"), _sub(order, "lab_test", "method")
    if details is None or method is None or _sub(order, "diagnostic_lab_test", "method") != "":
        return None
    out.details_type, out.lab_test_method = details, method
    events = order.get("events")
    if events is not None:
        if not isinstance(events, list):
            return None
        for raw in events:
            event = _event(raw)
            if event is None:
                return None
            out.events.append(event)
    if order.get("last_event") is not None:
        event = _event(order["last_event"])
        if event is None:
            return None
        out.last_event.CopyFrom(event)
    return out


def typed_appointment(appt: Any) -> Any:
    """The typed ``Appointment`` for an appointment JSON, or None when it cannot be said exactly."""
    from server._gen.orderpolicy.v1 import order_policy_pb2 as pb

    if not isinstance(appt, Mapping):
        return None
    out = pb.Appointment()
    for name in ("id", "order_id", "status", "provider", "type"):
        value = appt.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            return None
        setattr(out, name, value)
    if appt.get("start_at") is not None:
        start = aware_datetime(appt["start_at"])
        if start is None:
            return None
        out.start_at.FromDatetime(start.astimezone(dt.UTC))
    return out


def case_request(case: Any, *, typed: bool) -> Any:
    """The ``DecideRequest`` of a bundle test case (``server.cases.Case``), with its order and
    appointment as JSON text or as typed messages; None when the case cannot be said so
    (a ``now`` without offset, raw JSON text for a typed request, ...)."""
    import json

    from server._gen.orderpolicy.v1 import order_policy_pb2 as pb

    actions = {"cancel_order": pb.ACTION_CANCEL_ORDER, "cancel_appointment": pb.ACTION_CANCEL_APPOINTMENT}
    now = aware_datetime(case.now_text)
    if case.action not in actions or now is None:
        return None
    request = pb.DecideRequest(action=actions[case.action])
    request.now.FromDatetime(now.astimezone(dt.UTC))
    if not typed:
        request.order_json = (case.order_json if case.order_json is not None
                              else json.dumps(case.order, ensure_ascii=False))
        if case.appointment_json is not None:
            request.appointment_json = case.appointment_json
        elif case.appointment is not None:
            request.appointment_json = json.dumps(case.appointment, ensure_ascii=False)
        return request
    if case.order_json is not None or case.appointment_json is not None:
        return None  # raw JSON text has no typed equivalent
    order = typed_order(case.order)
    appointment = typed_appointment(case.appointment) if case.appointment is not None else None
    if order is None or (case.appointment is not None and appointment is None):
        return None
    request.order.CopyFrom(order)
    if appointment is not None:
        request.appointment.CopyFrom(appointment)
    return request
