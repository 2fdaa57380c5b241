"""One gRPC server in this process: OrderPolicyService, health and reflection on the decision
port, the admin API on its own listener, and a plaintext health listener for probes.

Tests use :class:`Server` in-process (``tests/support/servers.py``); ``server.app`` runs it
in one process or in forked workers (``server.supervisor``).
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from server._gen.orderpolicy.v1 import bundle_admin_pb2 as apb
from server._gen.orderpolicy.v1 import bundle_admin_pb2_grpc as apb_grpc
from server._gen.orderpolicy.v1 import order_policy_pb2 as pb
from server.api import log
from server.api.admin import AdminAuth, BundleAdminServicer, read_token_hashes
from server.api.metrics import METRICS
from server.api.servicer import OrderPolicyServicer, add_to_server
from server.decisionlog import DecisionLog
from server.lifecycle import BundleManager
from server.settings import ServeError, ServerOptions, bare_host, join_address, split_address

__all__ = ["ADMIN_SERVICE_NAME", "LIVENESS_SERVICE", "SERVICE_NAME", "Server", "check_port_free", "grpc_server"]

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["OrderPolicyService"].full_name
ADMIN_SERVICE_NAME = apb.DESCRIPTOR.services_by_name["BundleAdminService"].full_name
# A health service name that is SERVING while the process serves, with or without a bundle:
# a liveness probe asks for it, a readiness probe for "" (SERVING only once a bundle is loaded).
LIVENESS_SERVICE = "liveness"


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ServeError(f"cannot read {what} `{path}`: {exc.strerror or exc}") from None


def _credentials(options: ServerOptions) -> grpc.ServerCredentials | None:
    if options.tls_cert is None and options.tls_key is None:
        if options.tls_client_ca is not None:
            raise ServeError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if options.tls_cert is None or options.tls_key is None:
        raise ServeError("TLS needs both --tls-cert and --tls-key")
    cert = _read(options.tls_cert, "TLS certificate")
    key = _read(options.tls_key, "TLS key")
    client_ca = _read(options.tls_client_ca, "TLS client CA") if options.tls_client_ca is not None else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def check_port_free(host: str, port: int) -> None:
    """Fail clearly when something already listens on ``host:port``.

    grpcio enables SO_REUSEPORT by default, so without this check a second server
    could silently share the port; and its own bind error is vague.
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(bare_host(host) or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServeError(f"cannot resolve host `{host}`: {exc.strerror}") from None
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # SO_REUSEADDR ignores TIME_WAIT leftovers but still refuses a listening socket.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(sockaddr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ServeError(f"port {port} on `{host}` is already in use: is another server running?") from None
            raise ServeError(f"cannot listen on `{join_address(host, port)}`: {exc.strerror}") from None


def grpc_server(options: ServerOptions, *, reuse_port: bool = False, interceptors: Any = ()) -> grpc.Server:
    """A bare ``grpc.Server`` with the service's thread pool, port sharing and limits.

    The load test's echo baseline uses it too, so both measure the same stack.
    """
    return grpc.server(
        ThreadPoolExecutor(max_workers=options.threads, thread_name_prefix="rpc"),
        interceptors=list(interceptors) or None,
        options=[
            ("grpc.so_reuseport", 1 if reuse_port else 0),
            ("grpc.max_receive_message_length", options.max_message_bytes),
        ],
        maximum_concurrent_rpcs=options.max_concurrent_rpcs,
    )


class Server:
    """One gRPC server: OrderPolicyService, health, reflection, on one port."""

    def __init__(
        self,
        registry: Any,
        options: ServerOptions,
        *,
        reuse_port: bool = False,
        manager: BundleManager | None = None,
        decision_log: DecisionLog | None = None,
        tracing: Any = None,
        capture: Any = None,
    ) -> None:
        self.registry = registry
        self.options = options
        self.manager = manager
        # server.api.tracing.Tracing: given (tests), from --otel, or None (nothing imported)
        self.tracing = tracing if tracing is not None else (_tracing() if options.otel else None)
        self.servicer = OrderPolicyServicer(
            registry,
            max_batch=options.max_batch,
            shadow=(lambda: manager.shadow) if manager is not None else None,
            decision_log=decision_log,
            tracing=self.tracing,
            max_streams=options.stream_limit,
            stream_idle_timeout=options.stream_idle_timeout,
            capture=capture,
        )
        self._health = health.HealthServicer(experimental_non_blocking=True)
        self._health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        interceptors = self.tracing.interceptors() if self.tracing is not None else ()
        self._grpc = grpc_server(options, reuse_port=reuse_port, interceptors=interceptors)
        add_to_server(self.servicer, self._grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._grpc)
        # The public port serves (and reflection lists) decisions and health only; the
        # admin API has its own listener (loopback by default).
        reflection.enable_server_reflection([SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], self._grpc)
        if not reuse_port:
            check_port_free(options.host, options.port)
        self.port = self._bind()
        self._admin_grpc: grpc.Server | None = None
        self.admin_port: int | None = None
        if manager is not None:
            manager.add_listener(self._on_bundle_event)
            if options.admin_address:
                self._admin_grpc, self.admin_port = self._bind_admin(manager, reuse_port)
        self._probe_grpc, self.health_port = self._bind_health(reuse_port)
        self._refresh()

    def _on_bundle_event(self, event: str, fields: dict[str, Any]) -> None:
        if event == "bundle_activated":
            METRICS.bundle_loads.labels("activated").inc()
        elif event == "bundle_refused":
            METRICS.bundle_loads.labels("refused").inc()
        self._refresh()

    @property
    def address(self) -> str:
        """``host:port`` as bound (the real port when ``options.port`` was 0)."""
        return join_address(self.options.host, self.port)

    def _bind(self) -> int:
        address = join_address(self.options.host, self.options.port)
        credentials = _credentials(self.options)
        try:
            if credentials is None:
                return self._grpc.add_insecure_port(address)
            return self._grpc.add_secure_port(address, credentials)
        except RuntimeError:
            raise ServeError(f"cannot listen on `{address}`: the port is in use or the address is not local") from None

    @property
    def admin_address(self) -> str | None:
        """``host:port`` of the admin listener as bound, or None without one."""
        if self.admin_port is None or not self.options.admin_address:
            return None
        return join_address(split_address(self.options.admin_address)[0], self.admin_port)

    def _bind_admin(self, manager: BundleManager, reuse_port: bool) -> tuple[grpc.Server, int]:
        """The admin API's listener: its own port and threads, TLS when the server has TLS."""
        assert self.options.admin_address
        host, port = split_address(self.options.admin_address)
        if not reuse_port:
            check_port_free(host, port)
        admin = grpc.server(
            ThreadPoolExecutor(max_workers=4, thread_name_prefix="admin"),
            options=[
                ("grpc.so_reuseport", 1 if reuse_port else 0),
                ("grpc.max_receive_message_length", self.options.max_message_bytes),
            ],
            maximum_concurrent_rpcs=16,
        )
        apb_grpc.add_BundleAdminServiceServicer_to_server(
            BundleAdminServicer(manager, _admin_auth(self.options)), admin
        )
        reflection.enable_server_reflection([ADMIN_SERVICE_NAME, reflection.SERVICE_NAME], admin)
        address = join_address(host, port)
        credentials = _credentials(self.options)
        try:
            if credentials is None:
                return admin, admin.add_insecure_port(address)
            return admin, admin.add_secure_port(address, credentials)
        except RuntimeError:
            raise ServeError(
                f"cannot listen on `{address}` for the admin API: the port is in use or the address is not local"
            ) from None

    def _bind_health(self, reuse_port: bool) -> tuple[grpc.Server | None, int | None]:
        """The probes' listener: plaintext, health only (kubelet's gRPC probes have no TLS)."""
        if self.options.health_port is None:
            return None, None
        if not reuse_port:
            check_port_free(self.options.host, self.options.health_port)
        probes = grpc.server(
            ThreadPoolExecutor(max_workers=4, thread_name_prefix="probe"),
            options=[("grpc.so_reuseport", 1 if reuse_port else 0)],
            maximum_concurrent_rpcs=64,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, probes)
        address = join_address(self.options.host, self.options.health_port)
        try:
            return probes, probes.add_insecure_port(address)
        except RuntimeError:
            raise ServeError(f"cannot listen on `{address}` for health probes: the port is in use") from None

    def _refresh(self) -> None:
        """Health follows the registry: SERVING only while a bundle is active."""
        policy = self.registry.active()
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        state = serving if policy is not None else not_serving
        for name in ("", SERVICE_NAME):
            self._health.set(name, state)
        if policy is not None:
            ref = policy.ref
            METRICS.bundle_loaded(ref.name, ref.revision, ref.digest)

    def load(self, bundle_dir: str | Path) -> Any:
        """Load (validate, compile, activate) a bundle and report SERVING."""
        policy = self.registry.load(bundle_dir)
        ref = policy.ref
        log.event("bundle_loaded", name=ref.name, revision=ref.revision, digest=ref.digest)
        self._refresh()
        return policy

    def start(self) -> None:
        self._grpc.start()
        if self._admin_grpc is not None:
            self._admin_grpc.start()
        if self._probe_grpc is not None:
            self._probe_grpc.start()

    def stop(self, grace: float | None = None) -> threading.Event:
        """Report NOT_SERVING, refuse new calls, let in-flight calls end within ``grace``."""
        self._health.enter_graceful_shutdown()
        if self._probe_grpc is not None:
            self._probe_grpc.stop(grace)
        if self._admin_grpc is not None:
            self._admin_grpc.stop(grace)
        return self._grpc.stop(grace)

    def shutdown(self, grace: float) -> None:
        """Graceful stop: NOT_SERVING, drain in-flight calls, then stop within ``grace``."""
        start = time.monotonic()
        self._health.enter_graceful_shutdown()
        drained = self.servicer.drain(grace)
        remaining = max(0.0, grace - (time.monotonic() - start))
        if self._probe_grpc is not None:
            self._probe_grpc.stop(0)
        if self._admin_grpc is not None:
            self._admin_grpc.stop(0)
        self._grpc.stop(remaining).wait()
        if not drained:
            log.event("shutdown_grace_expired", logging.WARNING, grace_s=grace)
        if self.tracing is not None:
            self.tracing.shutdown()

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self._grpc.wait_for_termination(timeout)


def _tracing() -> Any:
    """Tracing from the OTEL_* environment; the only place that imports OpenTelemetry."""
    try:
        from server.api import tracing
    except ImportError as exc:
        raise ServeError(
            f"--otel needs the `otel` extra (pip install 'order-policy[otel]'): cannot import `{exc.name}`"
        ) from None
    try:
        configured = tracing.configure()
    except tracing.TracingError as exc:
        raise ServeError(str(exc)) from None
    log.trace_id = configured.trace_id
    return configured


def _admin_auth(options: ServerOptions) -> AdminAuth:
    hashes: list[str] = []
    if options.admin_token_file is not None:
        try:
            hashes = read_token_hashes(options.admin_token_file)
        except (OSError, ValueError) as exc:
            raise ServeError(f"cannot read the admin token file: {exc}") from None
    return AdminAuth(hashes, options.admin_client_names)
