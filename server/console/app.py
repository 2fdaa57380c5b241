"""The console's web server: the standard library's threading HTTP server, Jinja2 templates.

Read-only: GET and HEAD for every page, POST only for the playground's decide (which
writes nothing). Bounded: request bodies (``max_body``), concurrent requests
(``max_requests``; more get 503), idle connections (``timeout``). Errors never show a
stack trace: an unexpected exception is logged as one JSON line, counted and answered
with a plain 500 page. A request whose ``Host`` is not the console's own address is
refused (a web page elsewhere cannot read the console through DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

import jinja2
import markupsafe

from server.console import pages
from server.console.state import ConsoleState, View
from server.decide import RetiredError
from server.workbench import replay

__all__ = ["ConsoleServer", "is_loopback"]

log = logging.getLogger("order_policy.console")

STATIC_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
}
SECURITY_HEADERS = {
    # Everything comes from the console itself: no CDN, no inline script or style.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; script-src 'self'; "
    "style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def is_loopback(host: str) -> bool:
    """Whether ``host`` names a loopback address (127.0.0.0/8, ::1, localhost)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _breakable(text: object) -> markupsafe.Markup:
    """Escaped text that may wrap after ``.``, ``_`` and ``/`` (status codes, rule ids, paths)."""
    escaped = str(markupsafe.escape(str(text)))
    return markupsafe.Markup(escaped.replace(".", ".<wbr>").replace("_", "_<wbr>").replace("/", "/<wbr>"))


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("server.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["urlencode_query"] = lambda d: urllib.parse.urlencode(d)
    env.filters["breakable"] = _breakable
    return env


def _static_files() -> dict[str, bytes]:
    root = resources.files("server.console").joinpath("static")
    return {
        entry.name: entry.read_bytes()
        for entry in root.iterdir()
        if entry.is_file() and any(entry.name.endswith(ext) for ext in STATIC_TYPES)
    }


class _Impact:
    """The replay of the samples (or the bundle's own cases) through bundle and candidate, once per view."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._generation = -1
        self._value: Any = None

    def __call__(self, view: View) -> Any:
        bundle, candidate = view.bundle.decider, view.candidate.decider if view.candidate is not None else None
        if bundle is None or candidate is None:
            return None
        with self._lock:
            if self._generation != view.generation:
                if view.samples is not None:
                    inputs = [*view.samples.records, *view.samples.errors]
                else:
                    inputs = pages.case_inputs(view.bundle)
                self._value = replay(bundle, candidate, inputs)
                self._generation = view.generation
            return self._value


class ConsoleServer(ThreadingHTTPServer):
    """The console on ``(host, port)``; ``serve_forever()`` runs it, ``shutdown()`` stops it."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        state: ConsoleState,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        max_body: int = 1024 * 1024,
        max_requests: int = 16,
        timeout: float = 30.0,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host.strip("[]"), port), _Handler)
        self.state = state
        self.host = host
        self.max_body = max_body
        self.timeout_seconds = timeout
        self.slots = threading.BoundedSemaphore(max_requests)
        self.env = _environment()
        self.static = _static_files()
        self.impact = _Impact()
        self.errors = 0  # unexpected exceptions answered with 500

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host.strip('[]')}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def allowed_host(self, header: str | None) -> bool:
        """A request's ``Host`` must name this console when it listens on loopback."""
        if not is_loopback(self.host):
            return True
        if not header:
            return False
        name, _, port = header.rpartition(":") if not header.endswith("]") else (header, "", "")
        if not name:
            name, port = header, ""
        return is_loopback(name) and port in ("", str(self.port))

    def handle_error(self, request: Any, client_address: Any) -> None:
        """An exception outside a page (a connection reset while reading): one log line, no trace."""
        self.errors += 1
        error = sys.exception()
        if not isinstance(error, ConnectionError):
            log.error("console connection failed", extra={"fields": {"error": type(error).__name__}})

    def render(self, page: pages.Page, view: View) -> str:
        template = self.env.get_template(page.template)
        return template.render(view=view, **page.context)


Route = Callable[["_Handler", View, Mapping[str, str], Mapping[str, str] | None], pages.Page]


def _matrix(h: _Handler, view: View, query: Mapping[str, str], form: Mapping[str, str] | None) -> pages.Page:
    return pages.matrix_page(view, query)


def _cell(h: _Handler, view: View, query: Mapping[str, str], form: Mapping[str, str] | None) -> pages.Page:
    page = pages.cell_page(view, query)
    if query.get("fragment") == "1":
        page.template = "cell_fragment.html"
    return page


def _playground(h: _Handler, view: View, query: Mapping[str, str], form: Mapping[str, str] | None) -> pages.Page:
    return pages.playground_page(view, query, form)


def _bundle(h: _Handler, view: View, query: Mapping[str, str], form: Mapping[str, str] | None) -> pages.Page:
    return pages.bundle_page(view, query)


def _compare(h: _Handler, view: View, query: Mapping[str, str], form: Mapping[str, str] | None) -> pages.Page:
    return pages.compare_page(view, query, h.server.impact)


ROUTES: dict[str, Route] = {
    "/matrix": _matrix,
    "/cell": _cell,
    "/playground": _playground,
    "/bundle": _bundle,
    "/compare": _compare,
}
POST_ROUTES = {"/playground"}


class _Handler(BaseHTTPRequestHandler):
    server: ConsoleServer
    server_version = "order-policy-console"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.timeout_seconds)  # an idle connection never holds a thread

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are not logged: the console is local and pages carry no secrets; errors are

    # -- methods ------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._handle(body=True)

    def do_HEAD(self) -> None:
        self._handle(body=False)

    def do_POST(self) -> None:
        self._handle(body=True, post=True)

    def _refuse_method(self) -> None:
        self._plain(
            HTTPStatus.METHOD_NOT_ALLOWED,
            "the console is read-only: GET, HEAD and the playground's POST only",
            extra={"Allow": "GET, HEAD, POST"},
        )

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _refuse_method

    # -- dispatch ------------------------------------------------------------------------------

    def _handle(self, *, body: bool, post: bool = False) -> None:
        if not self.server.allowed_host(self.headers.get("Host")):
            self._drain_and_close()
            self._plain(HTTPStatus.MISDIRECTED_REQUEST, "unknown host: open the console by the address it printed")
            return
        if not self.server.slots.acquire(blocking=False):
            self._drain_and_close()
            self._plain(
                HTTPStatus.SERVICE_UNAVAILABLE, "too many requests at once: try again", extra={"Retry-After": "1"}
            )
            return
        try:
            self._dispatch(body=body, post=post)
        except ConnectionError:  # the browser went away (a page left mid-request): nothing to answer
            self.close_connection = True
        except Exception as exc:  # never a stack trace to the browser: log one line, count, answer 500
            self.server.errors += 1
            log.error(
                "console request failed", extra={"fields": {"path": self.path[:200], "error": type(exc).__name__}}
            )
            self.close_connection = True
            self._plain(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error: see the console's log")
        finally:
            self.server.slots.release()

    def _dispatch(self, *, body: bool, post: bool) -> None:
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True, max_num_fields=64))
        if path == "/":
            self._drain_and_close()
            self._redirect("/matrix")
            return
        if path.startswith("/static/") and not post:
            self._static(path.removeprefix("/static/"), body=body)
            return
        if path == "/generation" and not post:
            self._send(
                HTTPStatus.OK, str(self.server.state.view().generation).encode(), "text/plain; charset=utf-8", body=body
            )
            return
        route = ROUTES.get(path)
        if route is None:
            self._drain_and_close()
            self._page(pages.Page("not_found.html", {"page": "", "path": path}, status=404), body=body)
            return
        form = None
        if post:
            if path not in POST_ROUTES:
                self._drain_and_close()
                self._refuse_method()
                return
            form = self._form()
            if form is None:
                return
        for attempt in range(3):
            view = self.server.state.view()
            try:
                page = route(self, view, query, form)
                break
            except RetiredError:  # the bundle was reloaded while this page rendered: use the new one
                if attempt == 2:
                    raise
        self._page(page, body=body, view=view)

    # -- request bodies --------------------------------------------------------------------------

    def _form(self) -> dict[str, str] | None:
        """The POSTed form, or None after answering 411/413/415/400."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._plain(HTTPStatus.LENGTH_REQUIRED, "send the form with a Content-Length")
            return None
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True
            self._plain(HTTPStatus.LENGTH_REQUIRED, "send the form with a Content-Length")
            return None
        if length < 0 or length > self.server.max_body:
            self.close_connection = True  # the body is not read: the connection cannot be reused
            self._plain(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the form is larger than {self.server.max_body} bytes")
            return None
        raw = self.rfile.read(length)
        kind = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            self._plain(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the form as application/x-www-form-urlencoded")
            return None
        try:
            text = raw.decode("utf-8")
            return dict(urllib.parse.parse_qsl(text, keep_blank_values=True, max_num_fields=64))
        except (UnicodeDecodeError, ValueError):
            self._plain(HTTPStatus.BAD_REQUEST, "the form is not UTF-8 text of at most 64 fields")
            return None

    def _drain_and_close(self) -> None:
        """Answers sent before reading a body end the connection (the body is never read)."""
        if self.headers.get("Content-Length") not in (None, "0") or self.headers.get("Transfer-Encoding"):
            self.close_connection = True

    # -- responses ------------------------------------------------------------------------------------

    def _page(self, page: pages.Page, *, body: bool, view: View | None = None) -> None:
        view = view or self.server.state.view()
        html = self.server.render(page, view).encode("utf-8")
        self._send(page.status, html, "text/html; charset=utf-8", body=body)

    def _static(self, name: str, *, body: bool) -> None:
        data = self.server.static.get(name)
        if data is None:
            self._page(
                pages.Page("not_found.html", {"page": "", "path": self.path.split("?")[0]}, status=404), body=body
            )
            return
        ext = name[name.rfind(".") :]
        self._send(HTTPStatus.OK, data, STATIC_TYPES[ext], body=body)

    def _redirect(self, location: str) -> None:
        self.send_response(HTTPStatus.SEE_OTHER)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _plain(self, status: int, message: str, *, extra: Mapping[str, str] | None = None) -> None:
        self._send(status, f"{int(status)} {message}\n".encode(), "text/plain; charset=utf-8", body=True, extra=extra)

    def _send(
        self, status: int, data: bytes, content_type: str, *, body: bool, extra: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in {**SECURITY_HEADERS, **(extra or {})}.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(data)
