"""Real servers on free loopback ports, and waiting on conditions instead of sleeping.

``running_server(bundle_dir)`` starts the real gRPC server in this process on
``127.0.0.1`` port 0 and yields its address; ``serving(...)`` yields the
:class:`server.app.Server` itself (to load a bundle later, read counters).
``serve_process(bundle_dir, ...)`` runs the real ``order-policy serve`` command in a
subprocess on a free loopback port and waits until it reports SERVING.
``wait_until(condition)`` polls a condition with a deadline (never a fixed sleep).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
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
    "wait_serving",
    "wait_until",
]

_REPO = Path(__file__).resolve().parents[2]


def wait_until(
    condition: Callable[[], Any],
    timeout: float = 30.0,
    interval: float = 0.02,
    message: str = "condition",
    raising: bool = True,
) -> Any:
    """Poll ``condition`` until it returns a true value, and return that value.

    After ``timeout`` seconds: TimeoutError naming ``message`` (or the last value when
    ``raising=False``). Tests wait for what they need (a reload seen, a worker up),
    never for a fixed time.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            if not raising:
                return value
            raise TimeoutError(f"{message} not reached after {timeout} s")
        time.sleep(interval)


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
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1.0)
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
    admin_address: str = ""  # the admin listener (a free loopback port unless the test chose one)

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
    The admin listener goes on another free loopback port unless ``args`` name one.
    """
    port = free_port()
    admin: list[str] = []
    admin_address = ""
    if "--admin-address" not in args:
        admin_address = f"127.0.0.1:{free_port()}"
        admin = ["--admin-address", admin_address]
    argv = serve_command(
        "serve",
        "--bundle",
        str(bundle_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        *admin,
        *args,
    )
    with tempfile.TemporaryDirectory(prefix="order-policy-serve-") as tmp:
        log_path = Path(tmp) / "server.log"
        full_env = {**os.environ, "PYTHONPATH": str(_REPO), **(env or {})}
        full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        with open(log_path, "wb") as out:
            process = subprocess.Popen(
                argv,
                cwd=_REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=full_env,
                start_new_session=True,  # its own process group: cleanup reaches every worker
            )
        handle = ServeProcess(process, f"127.0.0.1:{port}", port, log_path, argv, admin_address)
        try:
            if wait:
                wait_serving(handle.address, timeout, alive=lambda: process.poll() is None)
            yield handle
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the parent and any worker left
            process.wait(10)
