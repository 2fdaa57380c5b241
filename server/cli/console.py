"""``order-policy console``: a local, read-only web page over a bundle (see :mod:`server.console`)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from server import default_bundle
from server.cli import ExitCode

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    p = sub.add_parser(
        "console",
        help="a local read-only web page: matrix, playground, bundle report, compare",
        description="Serve a read-only web page over a bundle on loopback; it reloads the files when they change.",
    )
    p.add_argument("--bundle", help="bundle directory or archive (.tar.gz) (default: the shipped bundle)")
    p.add_argument("--candidate", help="a changed bundle (directory or archive) to compare with --bundle")
    p.add_argument(
        "--samples",
        help="recorded requests to replay on Compare and choose in the playground "
        "(a .jsonl file or a directory of JSON files)",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; another address prints a warning)"
    )
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    p.add_argument("--max-samples", type=int, default=100_000, help="most samples read from --samples (default 100000)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; 0 on a clean stop, 1 when the port cannot be opened."""
    from server.api import log
    from server.console import ConsoleServer, ConsoleState, is_loopback

    if not 0 <= args.port <= 65535 or args.max_samples <= 0:
        print("error: --port must be 0-65535 and --max-samples positive", file=sys.stderr)
        return ExitCode.FAILURE
    log.configure()
    state = ConsoleState(
        args.bundle or str(default_bundle()), args.candidate, args.samples, max_samples=args.max_samples
    )
    try:
        try:
            server = ConsoleServer(state, args.host, args.port)
        except OSError as exc:
            print(f"error: cannot listen on `{args.host}:{args.port}`: {exc.strerror or exc}", file=sys.stderr)
            return ExitCode.FAILURE
        if not is_loopback(args.host):
            print(
                f"warning: the console listens on `{args.host}`, reachable from other machines; it has no "
                "authentication and shows the whole bundle",
                file=sys.stderr,
            )
        state.watch()
        stop = threading.Event()

        def _stop(signum: int, frame: Any) -> None:
            stop.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        view = state.view()
        for label, loaded in (("bundle", view.bundle), ("candidate", view.candidate)):
            if loaded is not None and not loaded.ok:
                print(
                    f"warning: the {label} `{loaded.source}` does not load ({len(loaded.errors)} error(s)); "
                    "the console shows them and reloads when the files change",
                    file=sys.stderr,
                )
        print(f"console: {server.url} (read-only; Ctrl-C stops it)", flush=True)
        try:
            server.serve_forever(poll_interval=0.2)
        finally:
            server.server_close()
        return ExitCode.OK
    finally:
        state.close()
