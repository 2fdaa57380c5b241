"""A real order-policy server for the caller's own tests, started from a bundle on loopback.

    from order_policy_client import Client
    from order_policy_client.testing import running_server

    def test_my_service_asks_order_policy(tmp_path):
        with running_server("path/to/bundle") as server, Client(server.address) as client:
            assert client.decide(order).outcome == "ALLOW"

The server is the ``order-policy`` command (``ORDER_POLICY_COMMAND``, for example
``docker run --rm --network host IMAGE``, or ``order-policy`` on PATH), run as
``order-policy serve --bundle BUNDLE --host 127.0.0.1 --port PORT --workers 1`` on a free
port; ``running_server`` returns once its health service says SERVING (a bundle is loaded).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc

from order_policy_client._client import Client
from order_policy_client._errors import OrderPolicyError

__all__ = ["ServerProcess", "free_port", "running_server", "server_command"]


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the OS's choice for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def server_command() -> list[str]:
    """The command that runs ``order-policy``: ``ORDER_POLICY_COMMAND`` or ``order-policy`` on PATH."""
    configured = os.environ.get("ORDER_POLICY_COMMAND", "").strip()
    if configured:
        return shlex.split(configured)
    found = shutil.which("order-policy")
    if found is None:
        raise RuntimeError("no `order-policy` command: install the server or set ORDER_POLICY_COMMAND")
    return [found]


class ServerProcess:
    """A running ``order-policy serve`` on ``127.0.0.1:port``; restartable on the same port."""

    def __init__(
        self,
        bundle: str | Path,
        *,
        args: Sequence[str] = (),
        command: Sequence[str] | None = None,
        port: int | None = None,
        log_dir: Path | None = None,
        timeout: float = 60.0,
        tls: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.bundle = str(bundle)
        self.args = list(args)
        self.command = list(command) if command is not None else server_command()
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.timeout = timeout
        self.tls = tls  # how to reach a server started with --tls-cert/--tls-key
        self._log_dir = log_dir or Path(tempfile.mkdtemp(prefix="order-policy-client-test-"))
        self.log_path = self._log_dir / f"server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        """Start the server and wait until it is SERVING; RuntimeError with its log otherwise."""
        argv = [
            *self.command,
            "serve",
            "--bundle",
            self.bundle,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--admin-address",
            "127.0.0.1:0",  # never collide on the admin port's default
            *self.args,
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_serving()
        return self

    def wait_serving(self) -> None:
        deadline = time.monotonic() + self.timeout
        last = ""
        with Client(self.address, timeout=1.0, tls=self.tls or False) as client:
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    raise RuntimeError(f"order-policy exited before serving:\n{self.log()}")
                try:
                    last = client.health(timeout=1.0)
                    if last == "SERVING":
                        return
                except OrderPolicyError as exc:
                    last = exc.code
                time.sleep(0.05)
        raise RuntimeError(f"order-policy at {self.address} not SERVING after {self.timeout} s ({last}):\n{self.log()}")

    def log(self) -> str:
        """What the server wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the server's process group (every worker)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash or an evicted pod would."""
        self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(30)

    def stop(self, timeout: float = 30.0) -> int | None:
        """Stop the server with SIGTERM (it drains in-flight calls); its exit code."""
        if self.process is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.returncode

    def restart(self, *, crash: bool = True) -> None:
        """Kill (or stop) the server and start it again on the same port."""
        self.kill() if crash else self.stop()
        self.start()

    def __enter__(self) -> ServerProcess:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.kill()


@contextlib.contextmanager
def running_server(
    bundle: str | Path,
    *,
    args: Sequence[str] = (),
    command: Sequence[str] | None = None,
    timeout: float = 60.0,
    tls: grpc.ChannelCredentials | None = None,
) -> Iterator[ServerProcess]:
    """A real ``order-policy serve`` of ``bundle`` on a free loopback port, killed on exit.

    For a TLS server pass its flags in ``args`` and the credentials to reach it in ``tls``.
    """
    server = ServerProcess(bundle, args=args, command=command, timeout=timeout, tls=tls)
    try:
        yield server.start()
    finally:
        server.kill()
