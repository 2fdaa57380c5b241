"""Build and run the gRPC server: servicer, health, reflection, TLS, workers, shutdown.

``Server`` is one gRPC server in this process (tests use it in-process through
``tests/support/servers.py``). ``serve`` is the ``order-policy serve`` command: it compiles the
bundle once, then either serves in this process (one worker, ``grpc.so_reuseport=0`` so
a taken port fails clearly) or forks workers that share the port with SO_REUSEPORT
(grpc's ``examples/python/multiprocessing`` pattern: compile, then fork, and never touch
gRPC in the parent). SIGTERM/SIGINT stop accepting calls, let in-flight calls finish
within the grace period, and exit 0.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
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
from server.api.metrics import METRICS, serve_metrics
from server.api.servicer import OrderPolicyServicer, add_to_server
from server.api.streams import default_stream_limit
from server.bundle.reader import DEFAULT_LIMITS, Limits
from server.decisionlog import DecisionLog
from server.lifecycle import BundleManager, FetchOptions, StateDir

__all__ = ["SERVICE_NAME", "ServeError", "Server", "ServerOptions", "grpc_server", "serve"]

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["OrderPolicyService"].full_name
ADMIN_SERVICE_NAME = apb.DESCRIPTOR.services_by_name["BundleAdminService"].full_name
# A health service name that is SERVING while the process serves, with or without a bundle:
# a liveness probe asks for it, a readiness probe for "" (SERVING only once a bundle is loaded).
LIVENESS_SERVICE = "liveness"
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


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
    fetch_timeout: float = 30.0
    allow_cross_host_redirects: bool = False
    allow_unverified_source: bool = False
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


def _join(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:50052`` for IPv6) as host and port; ServeError otherwise."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ServeError(f"`{address}` is not HOST:PORT (for example `127.0.0.1:50052`)")
    return host, int(port)


def _bare(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


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


def _check_port_free(host: str, port: int) -> None:
    """Fail clearly when something already listens on ``host:port``.

    grpcio enables SO_REUSEPORT by default, so without this check a second server
    could silently share the port; and its own bind error is vague.
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(_bare(host) or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
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
            raise ServeError(f"cannot listen on `{_join(host, port)}`: {exc.strerror}") from None


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
            _check_port_free(options.host, options.port)
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
        return _join(self.options.host, self.port)

    def _bind(self) -> int:
        address = _join(self.options.host, self.options.port)
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
        return _join(split_address(self.options.admin_address)[0], self.admin_port)

    def _bind_admin(self, manager: BundleManager, reuse_port: bool) -> tuple[grpc.Server, int]:
        """The admin API's listener: its own port and threads, TLS when the server has TLS."""
        assert self.options.admin_address
        host, port = split_address(self.options.admin_address)
        if not reuse_port:
            _check_port_free(host, port)
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
        address = _join(host, port)
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
            _check_port_free(self.options.host, self.options.health_port)
        probes = grpc.server(
            ThreadPoolExecutor(max_workers=4, thread_name_prefix="probe"),
            options=[("grpc.so_reuseport", 1 if reuse_port else 0)],
            maximum_concurrent_rpcs=64,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, probes)
        address = _join(self.options.host, self.options.health_port)
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


# -- order-policy serve -------------------------------------------------------------------


def _admin_auth(options: ServerOptions) -> AdminAuth:
    hashes: list[str] = []
    if options.admin_token_file is not None:
        try:
            hashes = read_token_hashes(options.admin_token_file)
        except (OSError, ValueError) as exc:
            raise ServeError(f"cannot read the admin token file: {exc}") from None
    return AdminAuth(hashes, options.admin_client_names)


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def serve(bundle_source: str | Path, options: ServerOptions) -> int:
    """Load the bundle and serve it until SIGTERM/SIGINT, reloading it when it changes.

    ``bundle_source`` is a directory, an archive or an HTTP(S) URL. With a state
    directory the last good revision is served when the source is unreachable or
    invalid after a restart. Returns 0 after a clean stop, 1 when the server
    cannot start, 3 when no valid bundle could be loaded.
    """
    from server.errors import ErrorList
    from server.registry import Registry

    source = str(bundle_source)
    if source.startswith("http://") and options.verification_key is None and not options.allow_unverified_source:
        print(
            f"error: `{source}` is plain http and no --verification-key is set: anyone on the path could "
            "replace the policy; sign the bundles or pass --allow-unverified-source",
            file=sys.stderr,
        )
        return 1
    workers = options.workers or os.cpu_count() or 1
    state_dir = options.state_dir
    own_state = None
    if state_dir is None and workers > 1:
        # Workers follow one state directory to stay on one revision.
        own_state = state_dir = Path(tempfile.mkdtemp(prefix="order-policy-state-"))
    registry = Registry(keep=options.keep_revisions)
    manager = BundleManager(
        registry,
        state=StateDir(state_dir, keep=options.keep_revisions + 2) if state_dir is not None else None,
        verification_key=options.verification_key,
        limits=options.bundle_limits,
        fetch_options=FetchOptions(
            timeout=options.fetch_timeout,
            allow_cross_host_redirects=options.allow_cross_host_redirects,
            max_bytes=options.bundle_limits.max_archive_bytes,
        ),
    )
    # Every process that loads bundles logs what it did (workers inherit this).
    manager.add_listener(_log_bundle_event)
    etag = ""
    try:
        restored = manager.restore()
        if restored is not None:
            log.event("bundle_restored", revision=restored.ref.revision, digest=restored.ref.digest)
        try:
            # A URL is fetched once the port is bound (the restored revision serves meanwhile).
            if not _is_url(source):
                manager.activate_path(source)
        except ErrorList as exc:
            log.event("bundle_invalid", logging.ERROR, bundle=source, code=exc.errors[0].code if exc.errors else "")
            if registry.active() is None and not _is_url(source):
                print(f"error: cannot load bundle `{source}`:\n{exc}", file=sys.stderr)
                return 3
            print(
                f"warning: bundle `{source}` refused; serving "
                f"{'the last good revision' if registry.active() else 'nothing until it loads'}:\n{exc}",
                file=sys.stderr,
            )
        active = registry.active()
        if active is not None:
            ref = active.ref
            log.event("bundle_loaded", name=ref.name, revision=ref.revision, digest=ref.digest)
        try:
            if workers == 1:
                return _serve_single(registry, options, manager, source, etag)
            return _serve_forked(registry, options, workers, manager, source, etag)
        except ServeError as exc:
            log.event("serve_failed", logging.ERROR, reason=str(exc))
            print(f"error: {exc}", file=sys.stderr)
            return 1
    finally:
        manager.stop()
        if own_state is not None:
            shutil.rmtree(own_state, ignore_errors=True)


def _log_bundle_event(event: str, fields: dict[str, Any]) -> None:
    log.event(event, logging.ERROR if event == "bundle_refused" else logging.INFO, **fields)


def _watch(manager: BundleManager, source: str, etag: str, options: ServerOptions) -> None:
    if _is_url(source):
        manager.watch_url(source, etag=etag, poll_interval=options.poll_interval, fetch_now=True)
    else:
        manager.watch_source(source)


def _decision_log(options: ServerOptions) -> DecisionLog | None:
    if options.decision_log is None:
        return None
    return DecisionLog(
        options.decision_log,
        max_bytes=options.decision_log_max_bytes,
        backups=options.decision_log_backups,
        on_wait=METRICS.decision_log_waits.inc,
        on_drop=METRICS.decision_log_dropped.inc,
    )


def _capture(options: ServerOptions) -> Any:
    """The replayable capture (``--capture``), written and rotated like the decision log."""
    if options.capture is None:
        return None
    from server.workbench.capture import Capture

    return Capture(
        options.capture,
        sample=options.capture_sample,
        max_bytes=options.decision_log_max_bytes,
        backups=options.decision_log_backups,
        on_wait=METRICS.decision_log_waits.inc,
        on_drop=METRICS.decision_log_dropped.inc,
    )


def _serve_single(registry: Any, options: ServerOptions, manager: BundleManager, source: str, etag: str) -> int:
    dlog = _decision_log(options)
    capture = _capture(options)
    manager.mark_serving()
    server = Server(registry, options, manager=manager, decision_log=dlog, capture=capture)
    metrics = _start_metrics(options)
    _watch(manager, source, etag, options)
    try:
        return _run_until_signal(server, workers=1)
    finally:
        manager.stop()
        for sink in (dlog, capture):
            if sink is not None:
                sink.close()
        if metrics is not None:
            metrics.shutdown()  # type: ignore[attr-defined]


def _start_metrics(options: ServerOptions) -> object | None:
    if options.metrics_port is None:
        return None
    host = _bare(options.host)
    try:
        try:
            server = serve_metrics(options.metrics_port, host)
        except OSError:
            if host != "::":
                raise
            server = serve_metrics(options.metrics_port, "0.0.0.0")
    except OSError as exc:
        raise ServeError(f"cannot serve metrics on port {options.metrics_port}: {exc.strerror}") from None
    log.event("metrics_started", port=options.metrics_port)
    return server


def _run_until_signal(server: Server, **fields: Any) -> int:
    """Serve until SIGTERM/SIGINT, then shut down gracefully; 0 on a clean stop."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()  # only set a flag here: the main loop does the real work

    for sig in _SIGNALS:
        signal.signal(sig, on_signal)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    server.start()
    log.event(
        "server_started",
        address=server.address,
        tls=server.options.tls,
        mtls=server.options.tls_client_ca is not None,
        admin_address=server.admin_address or "",
        **fields,
    )
    while not stop.wait(0.5):
        pass
    grace = server.options.grace
    log.event("shutdown_started", grace_s=grace)
    server.shutdown(grace)
    log.event(
        "server_stopped",
        calls_started=server.servicer.calls_started,
        calls_answered=server.servicer.calls_answered,
        calls_refused=server.servicer.calls_refused,
    )
    return 0


def _die_with_parent(parent: int) -> None:
    """A worker gets SIGTERM when the parent dies (even by SIGKILL): no orphans on the port."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)


def _worker_log(target: str | None, index: int) -> str | None:
    """Each worker writes its own decision log file, ``<log>.w<index>`` (stdout is shared as is).

    Rotation renames ``<log>.w1`` to ``<log>.w1.1``: a worker's name never collides
    with another worker's rotated file.
    """
    if target is None or target == "-":
        return target
    return f"{target}.w{index}"


@contextlib.contextmanager
def _reserved_port(host: str, port: int) -> Iterator[int]:
    """Hold ``host:port`` with SO_REUSEPORT so every worker binds the same port."""
    _check_port_free(host, port)
    infos = socket.getaddrinfo(_bare(host) or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
        yield sock.getsockname()[1]
    finally:
        sock.close()


@contextlib.contextmanager
def _reserved_admin(options: ServerOptions) -> Iterator[ServerOptions]:
    """Hold the admin port for the workers too; yields the options with its real port."""
    if not options.admin_address:
        yield options
        return
    host, port = split_address(options.admin_address)
    with _reserved_port(host, port) as bound:
        yield replace(options, admin_address=_join(host, bound))


def _serve_forked(
    registry: Any,
    options: ServerOptions,
    workers: int,
    manager: BundleManager,
    source: str,
    etag: str,
) -> int:
    """The parent: fork ``workers`` servers on one port, restart crashed ones, stop all."""
    from prometheus_client import multiprocess

    children: dict[int, tuple[int, float]] = {}
    stopping = False
    failed = False
    quick_deaths = 0

    def spawn(index: int, port: int) -> None:
        # Block stop signals across fork: the child installs its own handlers first.
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        parent = os.getpid()
        try:
            pid = os.fork()
            if pid == 0:  # child: never return into the parent's stack
                code = 1
                try:
                    for sig in _SIGNALS:
                        signal.signal(sig, signal.SIG_DFL)
                    _die_with_parent(parent)
                    # The parent loads sources and writes the state directory;
                    # each worker follows it, so all end on the same revision.
                    manager.mark_serving()
                    manager.sync_from_state()
                    manager.watch_state()
                    dlog = _decision_log(replace(options, decision_log=_worker_log(options.decision_log, index)))
                    capture = _capture(replace(options, capture=_worker_log(options.capture, index)))
                    worker = Server(
                        registry,
                        replace(options, port=port),
                        reuse_port=True,
                        manager=manager,
                        decision_log=dlog,
                        capture=capture,
                    )
                    code = _run_until_signal(worker, worker_index=index)
                    manager.stop()
                    for sink in (dlog, capture):
                        if sink is not None:
                            sink.close()
                except BaseException as exc:
                    log.event(
                        "worker_failed",
                        logging.ERROR,
                        worker_index=index,
                        reason=str(exc) if isinstance(exc, ServeError) else type(exc).__name__,
                    )
                finally:
                    logging.shutdown()
                    os._exit(code)
            children[pid] = (index, time.monotonic())
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    if options.health_port:
        _check_port_free(options.host, options.health_port)
    with _reserved_port(options.host, options.port) as port, _reserved_admin(options) as options:
        for sig in _SIGNALS:
            signal.signal(sig, on_signal)
        for index in range(workers):
            if not stopping:
                spawn(index, port)
        log.event("workers_started", address=_join(options.host, port), workers=workers)
        metrics = _start_metrics(options)
        _watch(manager, source, etag, options)
        try:
            while children:
                try:
                    pid, wait_status = os.waitpid(-1, 0)
                except ChildProcessError:
                    break
                if pid not in children:
                    continue
                index, started = children.pop(pid)
                code = os.waitstatus_to_exitcode(wait_status)
                multiprocess.mark_process_dead(pid)
                if stopping:
                    failed = failed or code != 0
                    log.event("worker_stopped", worker_index=index, worker_pid=pid, exit_code=code)
                    continue
                log.event("worker_exited", logging.ERROR, worker_index=index, worker_pid=pid, exit_code=code)
                quick_deaths = quick_deaths + 1 if time.monotonic() - started < 5 else 0
                if quick_deaths >= 3:  # a crash loop: give up instead of spinning
                    failed = True
                    on_signal(signal.SIGTERM, None)
                    continue
                spawn(index, port)
        finally:
            if metrics is not None:
                metrics.shutdown()  # type: ignore[attr-defined]
    log.event("server_stopped", workers=workers, clean=not failed)
    return 1 if failed else 0
