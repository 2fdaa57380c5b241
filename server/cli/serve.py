"""``order-policy serve``: serve a bundle over gRPC (see :mod:`server.app`)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from server import default_bundle

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``serve`` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "serve",
        help="serve a policy bundle over gRPC",
        description="Serve orderpolicy.v1.OrderPolicyService, health and reflection. "
        "SIGTERM stops gracefully and exits 0.",
    )
    parser.add_argument(
        "--bundle",
        default=None,
        help="bundle directory, archive (.tar.gz) or HTTP(S) URL; "
        "watched or polled for changes (default: the bundle shipped with the package, "
        "rules/cancellation)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="keep the last good revisions here, served after a restart when the source is unreachable",
    )
    parser.add_argument(
        "--verification-key", type=Path, help="Ed25519 public key (PEM): refuse unsigned or tampered bundles"
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=30.0,
        help="seconds between polls of an HTTP(S) bundle source (default 30)",
    )
    parser.add_argument(
        "--keep-revisions", type=int, default=3, help="revisions kept loaded for pinning and rollback (default 3)"
    )
    parser.add_argument(
        "--admin-address",
        default="127.0.0.1:50052",
        help="HOST:PORT of the admin API's own listener, TLS when --tls-cert is given "
        "(default 127.0.0.1:50052; `none`: no admin API)",
    )
    parser.add_argument(
        "--admin-token-file", type=Path, help="file of hashed admin bearer tokens (`order-policy admin hash-token`)"
    )
    parser.add_argument(
        "--admin-client-cn",
        action="append",
        default=[],
        help="client certificate common name allowed to administer (mTLS; repeatable)",
    )
    parser.add_argument("--decision-log", help="write one JSON line per decision to this file (- for stdout)")
    parser.add_argument(
        "--decision-log-max-bytes",
        type=int,
        default=64 * 1024 * 1024,
        help="rotate the decision log file past this size (default 64 MiB)",
    )
    parser.add_argument(
        "--decision-log-backups",
        type=int,
        default=5,
        help="rotated decision log files kept: FILE.1 .. FILE.N (default 5)",
    )
    parser.add_argument(
        "--capture",
        help="write each decided request's replayable projection (no patient "
        "data; what `diff --input` reads) to this file (- for stdout), rotated as the decision log",
    )
    parser.add_argument(
        "--capture-sample", type=float, default=1.0, help="share of decided requests captured, in (0, 1] (default 1)"
    )
    parser.add_argument("--host", default="[::]", help="address to listen on (default all interfaces)")
    parser.add_argument("--port", type=int, default=50051, help="gRPC port (default 50051)")
    parser.add_argument(
        "--workers", type=int, default=0, help="worker processes sharing the port (default one per core)"
    )
    parser.add_argument("--threads", type=int, default=32, help="RPC threads per worker (default 32)")
    parser.add_argument(
        "--max-streams",
        type=int,
        default=None,
        help="open DecideStream calls per worker, below --threads so unary calls and "
        "health always find a thread (default three quarters of --threads)",
    )
    parser.add_argument(
        "--stream-idle-timeout",
        type=float,
        default=60.0,
        help="cancel a DecideStream that sends no message for this many seconds (default 60; 0 never)",
    )
    parser.add_argument(
        "--metrics-port", type=int, default=None, help="serve Prometheus /metrics on this port (default off)"
    )
    parser.add_argument(
        "--health-port",
        type=int,
        default=None,
        help="also serve grpc.health.v1 alone, in plaintext, on this port (for "
        'probes that cannot speak TLS; default off). Service "" is SERVING once a '
        'bundle is loaded, service "liveness" while the process serves',
    )
    parser.add_argument(
        "--otel",
        action="store_true",
        help="OpenTelemetry tracing: a span per RPC, the trace id in decision log "
        "entries and log lines; configured by the OTEL_* environment variables "
        "(needs the `otel` extra; default off)",
    )
    parser.add_argument("--tls-cert", type=Path, help="server certificate (PEM)")
    parser.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    parser.add_argument("--tls-client-ca", type=Path, help="CA (PEM) that client certificates must chain to (mTLS)")
    parser.add_argument(
        "--max-message-bytes", type=int, default=4 * 1024 * 1024, help="largest request accepted (default 4 MiB)"
    )
    parser.add_argument("--max-batch", type=int, default=1000, help="most requests in one DecideBatch (default 1000)")
    parser.add_argument(
        "--decision-memo-size",
        type=int,
        default=None,
        help="distinct situations remembered per ruleset, each decided by the engine once "
        "(0 turns the memo off; default 4096)",
    )
    parser.add_argument(
        "--grace", type=float, default=10.0, help="seconds in-flight calls get on shutdown (default 10)"
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM; 0 on a clean stop, 1 when the server cannot start."""
    for name in (
        "port",
        "workers",
        "threads",
        "max_message_bytes",
        "max_batch",
        "keep_revisions",
        "decision_log_max_bytes",
        "decision_log_backups",
    ):
        if getattr(args, name) < 0 or (name not in ("port", "workers") and getattr(args, name) == 0):
            print(f"error: --{name.replace('_', '-')} must be positive", file=sys.stderr)
            return 1
    if args.max_streams is not None and not 0 < args.max_streams < max(args.threads, 2):
        print(
            f"error: --max-streams must be at least 1 and below --threads ({args.threads}): "
            "unary calls and health checks need a thread that no stream holds",
            file=sys.stderr,
        )
        return 1
    if not 0.0 < args.capture_sample <= 1.0:
        print("error: --capture-sample must be in (0, 1]", file=sys.stderr)
        return 1
    if args.stream_idle_timeout < 0:
        print("error: --stream-idle-timeout must be 0 (never) or positive", file=sys.stderr)
        return 1
    bundle = args.bundle or str(default_bundle())
    if "://" not in bundle and not Path(bundle).exists() and not args.state_dir:
        print(f"error: bundle `{bundle}` does not exist", file=sys.stderr)
        return 1
    # prometheus_client picks multiprocess mode when first imported: set the directory
    # before anything imports it, so forked workers' metrics are summed.
    own_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        own_dir = tempfile.mkdtemp(prefix="order-policy-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = own_dir
    if args.decision_memo_size is not None:
        if args.decision_memo_size < 0:
            print("error: --decision-memo-size must be 0 or more", file=sys.stderr)
            return 1
        from server import engine

        engine.settings.memo_size = args.decision_memo_size
    pid = os.getpid()
    try:
        from server import app
        from server.api import log

        log.configure()
        options = app.ServerOptions(
            host=args.host,
            port=args.port,
            workers=args.workers,
            threads=args.threads,
            max_streams=args.max_streams,
            stream_idle_timeout=args.stream_idle_timeout,
            metrics_port=args.metrics_port,
            health_port=args.health_port,
            otel=args.otel,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls_client_ca=args.tls_client_ca,
            max_message_bytes=args.max_message_bytes,
            max_batch=args.max_batch,
            grace=args.grace,
            state_dir=args.state_dir,
            verification_key=args.verification_key,
            poll_interval=args.poll_interval,
            keep_revisions=args.keep_revisions,
            admin_address=None if args.admin_address.lower() in ("", "none") else args.admin_address,
            admin_token_file=args.admin_token_file,
            admin_client_names=tuple(args.admin_client_cn),
            decision_log=args.decision_log,
            decision_log_max_bytes=args.decision_log_max_bytes,
            decision_log_backups=args.decision_log_backups,
            capture=args.capture,
            capture_sample=args.capture_sample,
        )
        return app.serve(args.bundle or str(default_bundle()), options)
    finally:
        if own_dir is not None and os.getpid() == pid:
            shutil.rmtree(own_dir, ignore_errors=True)
