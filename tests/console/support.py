"""Builders for the console tests: a candidate bundle, a console running in this process, HTTP calls."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from server.console import ConsoleServer, ConsoleState
from tests.support.bundles import copy_bundle, set_revision, set_value


def candidate_with_refund_window(bundle: Path, dest: Path, window: str = "48h") -> Path:
    """A copy of ``bundle`` with another refund window and a new revision (structured edits)."""
    copy_bundle(dest, bundle)
    set_value(dest / "data" / "settings.yaml", ["params", "refund_window"], window)
    set_revision(dest, f"refund-{window}")
    return dest


def tree_digest(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root``: its sha256 and modification time (to prove nothing was written)."""
    return {
        p.relative_to(root).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@contextlib.contextmanager
def running_console(
    bundle: Path | str,
    candidate: Path | str | None = None,
    samples: Path | str | None = None,
    *,
    watch: bool = True,
    **options: Any,
) -> Iterator[ConsoleServer]:
    """The console in this process on 127.0.0.1, a free port; stopped on exit."""
    state = ConsoleState(str(bundle), str(candidate) if candidate else None, str(samples) if samples else None)
    server = ConsoleServer(state, "127.0.0.1", 0, **options)
    if watch:
        state.watch()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
        state.close()


def request(
    server: ConsoleServer,
    method: str,
    path: str,
    body: bytes | str | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, dict[str, str], str]:
    """One HTTP request on a new connection: (status, headers, body text)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode()
    finally:
        conn.close()
