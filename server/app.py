"""``order-policy serve``: load the bundle, then serve it in this process or in workers.

The pieces: ``server.settings`` (``ServerOptions``), ``server.rpcserver`` (one gRPC server:
decisions, health, reflection, the admin and probe listeners) and ``server.supervisor``
(forked workers sharing the port). ``serve`` compiles the bundle once, then either serves
in this process (one worker, ``grpc.so_reuseport=0`` so a taken port fails clearly) or
forks workers that share the port with SO_REUSEPORT. SIGTERM/SIGINT stop accepting calls,
let in-flight calls finish within the grace period, and exit 0.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from server.api import log
from server.api.metrics import METRICS, serve_metrics
from server.decisionlog import DecisionLog
from server.lifecycle import BundleManager, FetchOptions, StateDir
from server.rpcserver import ADMIN_SERVICE_NAME, LIVENESS_SERVICE, SERVICE_NAME, Server, grpc_server
from server.settings import ServeError, ServerOptions, bare_host
from server.supervisor import run_until_signal, serve_forked, worker_file

__all__ = [
    "ADMIN_SERVICE_NAME",
    "LIVENESS_SERVICE",
    "SERVICE_NAME",
    "ServeError",
    "Server",
    "ServerOptions",
    "grpc_server",
    "serve",
]


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
    )  # Every process that loads bundles logs what it did (workers inherit this).
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
            return _serve_workers(registry, options, workers, manager, source, etag)
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
        return run_until_signal(server, workers=1)
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
    host = bare_host(options.host)
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


def _serve_workers(
    registry: Any, options: ServerOptions, workers: int, manager: BundleManager, source: str, etag: str
) -> int:
    """``workers`` forked servers on one port (``server.supervisor``); the parent watches the source."""

    def worker(index: int, options: ServerOptions) -> int:
        # The parent loads sources and writes the state directory; each worker follows
        # it, so all end on the same revision.
        manager.mark_serving()
        manager.sync_from_state()
        manager.watch_state()
        dlog = _decision_log(replace(options, decision_log=worker_file(options.decision_log, index)))
        capture = _capture(replace(options, capture=worker_file(options.capture, index)))
        try:
            server = Server(registry, options, reuse_port=True, manager=manager, decision_log=dlog, capture=capture)
            return run_until_signal(server, worker_index=index)
        finally:
            manager.stop()
            for sink in (dlog, capture):
                if sink is not None:
                    sink.close()

    def parent_started(options: ServerOptions) -> Callable[[], None]:
        metrics = _start_metrics(options)
        _watch(manager, source, etag, options)
        return (lambda: metrics.shutdown()) if metrics is not None else (lambda: None)  # type: ignore[attr-defined]

    return serve_forked(options, workers, worker=worker, parent_started=parent_started)
