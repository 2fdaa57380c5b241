"""Settings of ``order-policy serve`` and the address helpers every listener uses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from server.api.streams import default_stream_limit
from server.bundle.reader import DEFAULT_LIMITS, Limits

__all__ = ["ServeError", "ServerOptions", "bare_host", "join_address", "split_address"]


class ServeError(Exception):
    """The server cannot start (port taken, unreadable TLS file, ...); one clear line."""


@dataclass(frozen=True)
class ServerOptions:
    """Settings of ``order-policy serve`` (defaults suit a container)."""

    host: str = "[::]"
    port: int = 50051
    workers: int = 0  # 0: one per core
    threads: int = 32  # per worker; a DecideStream holds one thread while open
    max_streams: int | None = None  # open DecideStream calls per worker; None: 3/4 of threads
    stream_idle_timeout: float = 60.0  # seconds without a message before a stream is cancelled; 0: never
    metrics_port: int | None = None
    health_port: int | None = None  # plaintext listener with grpc.health.v1 only (probes)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    max_message_bytes: int = 4 * 1024 * 1024
    max_batch: int = 1000
    max_concurrent_rpcs: int | None = 1024
    grace: float = 10.0
    state_dir: Path | None = None
    verification_key: Path | None = None
    poll_interval: float = 30.0
    keep_revisions: int = 3
    bundle_limits: Limits = DEFAULT_LIMITS
    fetch_timeout: float = 30.0  # one deadline for each fetch of a URL source
    allow_cross_host_redirects: bool = False
    allow_unverified_source: bool = False  # a plain http:// source without a verification key
    admin_address: str | None = "127.0.0.1:50052"  # the admin API's own listener; None: no admin API
    admin_token_file: Path | None = None
    admin_client_names: tuple[str, ...] = ()
    decision_log: str | None = None
    decision_log_max_bytes: int = 64 * 1024 * 1024
    decision_log_backups: int = 5
    otel: bool = False  # OpenTelemetry tracing, configured by the OTEL_* environment variables
    capture: str | None = None  # the replayable capture (server.workbench.capture)
    capture_sample: float = 1.0

    @property
    def stream_limit(self) -> int:
        """Open streams allowed per worker: always fewer than the threads (when there are 2+)."""
        return self.max_streams if self.max_streams is not None else default_stream_limit(self.threads)

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


def join_address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:50052`` for IPv6) as host and port; ServeError otherwise."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ServeError(f"`{address}` is not HOST:PORT (for example `127.0.0.1:50052`)")
    return host, int(port)


def bare_host(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host
