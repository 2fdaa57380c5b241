"""Signed revisions of a fixture bundle for the fleet rehearsal, and the server that hosts them.

Each good revision differs from the others in what it answers, not only in its label:
every reason and follow-up message ends with `` [<revision>]`` (and the bundle's own cases
expect that), so an answer that mixed two revisions, or claimed one revision while
deciding with another, cannot pass the check against the in-process decision.
The broken revision is signed correctly but names a fact no bundle has in a message
template, so every instance must refuse it at validation.

:class:`BundleServer` serves one archive at ``/cancellation.tar.gz`` with a strong ETag
(the archive's sha256), answers ``304`` to a matching ``If-None-Match``, and can be
taken down (its port refuses connections) and brought back on the same port, or stall
(it accepts requests and answers none).
"""

from __future__ import annotations

import hashlib
import http.server
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.bundles import copy_bundle, edit_yaml, set_revision
from tests.support.servers import free_port

__all__ = ["BundleServer", "Revision", "make_revision"]

ARCHIVE_PATH = "/cancellation.tar.gz"


@dataclass
class Revision:
    """One signed archive and, for a good revision, its directory (to decide in-process)."""

    label: str
    directory: Path
    archive: bytes
    good: bool


def _tag_messages(node: Any, suffix: str) -> Any:
    """Every catalogue ``message`` and every case's expected ``messages`` end with ``suffix``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "message" and isinstance(value, str):
                node[key] = value + suffix
            elif key == "messages" and isinstance(value, list):
                node[key] = [m + suffix for m in value]
            else:
                _tag_messages(value, suffix)
    elif isinstance(node, list):
        for item in node:
            _tag_messages(item, suffix)
    return node


def make_revision(
    source: Path, work: Path, label: str, signing_key: Path, *, serial: int, good: bool = True
) -> Revision:
    """Copy ``source`` as revision ``label`` (messages tagged with it), archive it with the signed ``serial``."""
    from server.bundle.archive import build_archive, sign_archive

    directory = copy_bundle(work / label, source)
    set_revision(directory, label)
    for path in [directory / "data" / "catalogue.yaml", *sorted((directory / "tests").glob("*.yaml"))]:
        edit_yaml(path, lambda data: _tag_messages(data, f" [{label}]"))
    if not good:  # a message naming a fact that does not exist: refused at validation

        def unknown_fact(data: Any) -> Any:
            first = next(iter(data["reasons"].values()))
            first["message"] = "{no_such_fact} " + first["message"]
            return data

        edit_yaml(directory / "data" / "catalogue.yaml", unknown_fact)
    # A good revision must pass its own cases, the broken one must be refused, here first.
    from server.errors import ErrorList
    from server.registry import build_decider

    try:
        build_decider(directory, run_tests=True).close()
        refused = None
    except ErrorList as exc:
        refused = exc
    if good and refused is not None:
        raise AssertionError(f"revision {label} is refused: {refused}")
    if not good and refused is None:
        raise AssertionError(f"revision {label} should be refused")
    out = work / f"{label}.tar.gz"
    build_archive(directory, out, serial=serial)
    sign_archive(out, signing_key)
    return Revision(label, directory, out.read_bytes(), good)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _HTTPServer

    def do_GET(self) -> None:
        owner = self.server.owner
        if not owner.answering.is_set():  # stalled: hold the request until it answers again
            owner.count("held")
            owner.answering.wait(120)
            if not owner.up:  # taken down meanwhile: close without an answer
                self.close_connection = True
                return
        body, etag = owner.current()
        if self.path != ARCHIVE_PATH or not body:
            owner.count("404")
            self.send_error(404)
            return
        if self.headers.get("If-None-Match") == etag:
            owner.count("304")
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        owner.count("200")
        self.send_response(200)
        self.send_header("ETag", etag)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: BundleServer


class BundleServer:
    """An HTTP server on 127.0.0.1 with one archive and its ETag; can go down and come back."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{ARCHIVE_PATH}"
        self._lock = threading.Lock()
        self._body = b""
        self._etag = ""
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.answers: dict[str, int] = {}
        self.answering = threading.Event()  # cleared: requests are accepted but never answered
        self.answering.set()

    def publish(self, archive: bytes) -> str:
        """Serve ``archive`` from now on (atomically); returns its ETag."""
        etag = '"' + hashlib.sha256(archive).hexdigest()[:32] + '"'
        with self._lock:
            self._body, self._etag = archive, etag
        return etag

    def current(self) -> tuple[bytes, str]:
        with self._lock:
            return self._body, self._etag

    def count(self, status: str) -> None:
        with self._lock:
            self.answers[status] = self.answers.get(status, 0) + 1

    @property
    def up(self) -> bool:
        return self._httpd is not None

    def start(self) -> None:
        """Listen (again) on the same port."""
        if self._httpd is not None:
            return
        httpd = _HTTPServer(("127.0.0.1", self.port), _Handler)
        httpd.owner = self
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="bundle-server", daemon=True
        )
        self._httpd = httpd
        self._thread.start()

    def stall(self) -> None:
        """Accept connections and requests but answer none until :meth:`resume` (a hung server)."""
        self.answering.clear()

    def resume(self) -> None:
        """Answer again (held requests too)."""
        self.answering.set()

    def stop(self) -> None:
        """Stop listening: connections to the port are refused until :meth:`start`."""
        httpd, self._httpd = self._httpd, None
        self.answering.set()  # let held requests end
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
