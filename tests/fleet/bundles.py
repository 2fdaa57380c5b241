"""Signed revisions of a fixture bundle for the fleet rehearsal, and the server that hosts them.

Each good revision differs from the others in what it answers, not only in its label:
every reason and follow-up message ends with `` [<revision>]`` (and the bundle's own cases
expect that), so an answer that mixed two revisions, or claimed one revision while
deciding with another, cannot pass the check against the in-process decision.
The broken revision is signed correctly but names a fact no bundle has in a message
template, so every instance must refuse it at validation.

:class:`BundleServer` serves one archive at ``/cancellation.tar.gz`` with a strong ETag
(the archive's sha256), answers ``304`` to a matching ``If-None-Match``, and can be
taken down (its port refuses connections) and brought back on the same port.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import shutil
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["BundleServer", "Revision", "free_port", "make_revision"]

ARCHIVE_PATH = "/cancellation.tar.gz"


@dataclass
class Revision:
    """One signed archive and, for a good revision, its directory (to decide in-process)."""

    label: str
    directory: Path
    archive: bytes
    good: bool


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _with_suffix(text: str, suffix: str) -> str:
    """Rewrite ``message:`` values (one-line or block scalars) and ``messages: [...]`` to end with ``suffix``."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if m := re.match(r"^(\s*messages:\s*)(\[.*\])\s*$", line):
            lines[i] = m.group(1) + json.dumps([item + suffix for item in yaml.safe_load(m.group(2))])
        elif m := re.match(r"^(\s*)(message:\s*)([>|][-+]?)\s*$", line):
            indent = len(m.group(1))
            last = i
            while last + 1 < len(lines) and (not lines[last + 1].strip()
                                             or len(lines[last + 1]) - len(lines[last + 1].lstrip()) > indent):
                last += 1
            while not lines[last].strip():
                last -= 1
            lines[last] += suffix
            i = last
        elif m := re.match(r"^(\s*message:\s*)(\S.*?)\s*$", line):
            lines[i] = m.group(1) + json.dumps(yaml.safe_load(m.group(2)) + suffix)
        i += 1
    return "\n".join(lines) + "\n"


def make_revision(source: Path, work: Path, label: str, signing_key: Path, *, good: bool = True) -> Revision:
    """Copy ``source`` as revision ``label`` (messages tagged with it), archive and sign it."""
    from server.bundle.archive import build_archive, sign_archive

    directory = work / label
    shutil.copytree(source, directory)
    manifest = directory / "manifest.yaml"
    manifest.write_text(re.sub(r"(?m)^revision:.*$", f'revision: "{label}"', manifest.read_text()))
    files = [directory / "data" / "catalogue.yaml", *sorted((directory / "tests").glob("*.yaml"))]
    for path in files:
        path.write_text(_with_suffix(path.read_text(), f" [{label}]"))
    if not good:
        catalogue = directory / "data" / "catalogue.yaml"
        text = catalogue.read_text()
        broken = re.sub(r'(?m)^(\s*message:\s*")', r"\1{no_such_fact} ", text, count=1)
        assert broken != text, "the broken revision must differ from a good one"
        catalogue.write_text(broken)
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
    build_archive(directory, out)
    sign_archive(out, signing_key)
    return Revision(label, directory, out.read_bytes(), good)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _HTTPServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        owner = self.server.owner
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

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
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
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="bundle-server", daemon=True)
        self._httpd = httpd
        self._thread.start()

    def stop(self) -> None:
        """Stop listening: connections to the port are refused until :meth:`start`."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
