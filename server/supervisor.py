"""The worker supervisor: several server processes on one port, restarted when they crash.

grpc's ``examples/python/multiprocessing`` pattern: the parent compiles the bundle, holds
the port with SO_REUSEPORT, forks the workers and never touches gRPC itself. A worker gets
SIGTERM when the parent dies; a worker that dies is restarted, three quick deaths in a row
stop the whole server instead of spinning. SIGTERM/SIGINT reach every worker, which drain
and exit; the parent exits 0 when all stopped cleanly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from server.api import log
from server.rpcserver import Server, check_port_free
from server.settings import ServeError, ServerOptions, bare_host, join_address, split_address

__all__ = ["SIGNALS", "run_until_signal", "serve_forked", "worker_file"]

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def run_until_signal(server: Server, **fields: Any) -> int:
    """Serve until SIGTERM/SIGINT, then shut down gracefully; 0 on a clean stop."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()  # only set a flag here: the main loop does the real work

    for sig in SIGNALS:
        signal.signal(sig, on_signal)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
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


def worker_file(target: str | None, index: int) -> str | None:
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
    check_port_free(host, port)
    infos = socket.getaddrinfo(bare_host(host) or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
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
        yield replace(options, admin_address=join_address(host, bound))


def serve_forked(
    options: ServerOptions,
    workers: int,
    *,
    worker: Callable[[int, ServerOptions], int],
    parent_started: Callable[[ServerOptions], Callable[[], None]],
) -> int:
    """The parent: fork ``workers`` servers on one port, restart crashed ones, stop all.

    ``worker(index, options)`` runs in each child with the options of the port every worker
    shares and returns its exit code. ``parent_started(options)`` runs in the parent once the
    workers are forked (metrics, watching the bundle source) and returns its cleanup.
    """
    from prometheus_client import multiprocess

    children: dict[int, tuple[int, float]] = {}
    stopping = False
    failed = False
    quick_deaths = 0

    def spawn(index: int, port: int) -> None:
        # Block stop signals across fork: the child installs its own handlers first.
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        parent = os.getpid()
        try:
            pid = os.fork()
            if pid == 0:  # child: never return into the parent's stack
                code = 1
                try:
                    for sig in SIGNALS:
                        signal.signal(sig, signal.SIG_DFL)
                    _die_with_parent(parent)
                    code = worker(index, replace(options, port=port))
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
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    if options.health_port:
        check_port_free(options.host, options.health_port)
    with _reserved_port(options.host, options.port) as port, _reserved_admin(options) as options:
        for sig in SIGNALS:
            signal.signal(sig, on_signal)
        for index in range(workers):
            if not stopping:
                spawn(index, port)
        log.event("workers_started", address=join_address(options.host, port), workers=workers)
        cleanup = parent_started(options)
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
            cleanup()
    log.event("server_stopped", workers=workers, clean=not failed)
    return 1 if failed else 0
