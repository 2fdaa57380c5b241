"""Builders for the console tests: bundles to load, a console running in this process, HTTP calls."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from server.bundle.yamlio import load_yaml, plain
from server.console import ConsoleServer, ConsoleState

ROOT = Path(__file__).resolve().parents[2]
SOURCE_BUNDLE = ROOT / "rules" / "cancellation"


def copy_bundle(dest: Path) -> Path:
    """A private copy of a valid bundle that a test may edit."""
    shutil.copytree(SOURCE_BUNDLE, dest)
    return dest


def edit_yaml(path: Path, edit: Callable[[Any], None]) -> None:
    """A structured edit of one bundle file: parse it, change the data, write it back."""
    data, errors = load_yaml(path.read_text(encoding="utf-8"), path.name)
    assert not errors, errors
    data = plain(data)
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


def candidate_with_refund_window(bundle: Path, dest: Path, window: str = "48h") -> Path:
    """A copy of ``bundle`` with another refund window and a new revision (structured edits)."""
    shutil.copytree(bundle, dest)

    def window_param(settings: Any) -> None:
        assert "refund_window" in settings["params"], "the bundle has no refund_window param"
        settings["params"]["refund_window"] = window

    def revision(manifest: Any) -> None:
        manifest["revision"] = f"{manifest['revision']}-refund-{window}"

    edit_yaml(dest / "data" / "settings.yaml", window_param)
    edit_yaml(dest / "manifest.yaml", revision)
    return dest


def tree_digest(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root``: its sha256 and modification time (to prove nothing was written)."""
    return {p.relative_to(root).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def running_console(bundle: Path | str, candidate: Path | str | None = None, samples: Path | str | None = None,
                    *, watch: bool = True, **options: Any) -> Iterator[ConsoleServer]:
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


def request(server: ConsoleServer, method: str, path: str, body: bytes | str | None = None,
            headers: Mapping[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """One HTTP request on a new connection: (status, headers, body text)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode()
    finally:
        conn.close()


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns a true value; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
