"""Where revisions come from, each with its own loop: a path on disk, a URL, the state directory.

Every loop survives any exception: the manager records it (one JSON log line, a
refusal in the metrics, the status) and the loop goes on, after a short pause
when the loop itself broke. ``fetch`` pulls an archive over HTTP(S) with one
overall deadline (a slow or dripping server is cut off when it passes, whatever
phase the fetch is in), bounded size, and no redirect to another host unless
allowed.
"""

from __future__ import annotations

import contextlib
import http.client
import random
import socket
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.bundle.reader import DEFAULT_LIMITS
from server.errors import BundleError, ErrorList
from server.watcher import watch_path

if TYPE_CHECKING:
    from server.lifecycle.manager import BundleManager

__all__ = ["FetchOptions", "backoff", "fetch", "poll_url", "watch_source", "watch_state"]

_REDIRECTS = (301, 302, 303, 307, 308)
_LOOP_PAUSE = 1.0  # after a loop itself broke (not a refused bundle)


@dataclass(frozen=True)
class FetchOptions:
    """How a URL source is fetched."""

    timeout: float = 30.0  # one deadline for the whole fetch: connect, headers, body
    allow_cross_host_redirects: bool = False
    max_redirects: int = 5
    max_bytes: int = DEFAULT_LIMITS.max_archive_bytes
    backoff_base: float = 1.0  # first retry after a failed fetch; doubles up to the poll interval


def backoff(failures: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter: ``base * 2**(failures-1)`` capped, then +-20 %."""
    delay = min(cap, base * 2 ** max(0, failures - 1))
    return delay * random.uniform(0.8, 1.2)


def _fetch_error(message: str) -> BundleError:
    return BundleError(message, code="bundle_fetch_failed")


def _origin(parts: urllib.parse.SplitResult) -> tuple[str, str, int]:
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


class _Deadline:
    """Closes the connection when the deadline passes or the fetch is cancelled."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self.cancelled = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def watch(self, sock: socket.socket | None) -> None:
        """The connection's socket (kept: http.client lets go of it once a response owns it)."""
        with self._lock:
            self._sock = sock
        if self.expired or self.cancelled:
            self._close()

    def _expire(self) -> None:
        self.expired = True
        self._close()

    def cancel(self) -> None:
        self.cancelled = True
        self._close()

    def _close(self) -> None:
        with self._lock:
            sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def fetch(
    url: str,
    etag: str = "",
    options: FetchOptions = FetchOptions(),
    *,
    on_start: Callable[[_Deadline], None] | None = None,
) -> tuple[bytes | None, str]:
    """GET an archive with If-None-Match; ``(None, etag)`` when unchanged (304). Raises BundleError.

    ``on_start`` receives the fetch's deadline so another thread can cancel it.
    """
    with _Deadline(options.timeout) as deadline:
        if on_start is not None:
            on_start(deadline)
        try:
            return _fetch(url, etag, options, deadline)
        except BundleError:
            raise
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if deadline.expired:
                raise _fetch_error(f"fetching `{url}` took longer than {options.timeout:g} s") from None
            if deadline.cancelled:
                raise _fetch_error(f"fetching `{url}` was cancelled") from None
            raise _fetch_error(f"cannot fetch `{url}`: {getattr(exc, 'strerror', None) or exc}") from None


def _fetch(url: str, etag: str, options: FetchOptions, deadline: _Deadline) -> tuple[bytes | None, str]:
    current = url
    first = urllib.parse.urlsplit(url)
    for _ in range(options.max_redirects + 1):
        parts = urllib.parse.urlsplit(current)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _fetch_error(f"`{current}` is not an http(s) URL")
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = kind(parts.hostname, parts.port, timeout=options.timeout)
        resp: http.client.HTTPResponse | None = None
        try:
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            headers = {"User-Agent": "order-policy", "Accept-Encoding": "identity"}
            if etag:
                headers["If-None-Match"] = etag
            conn.connect()
            deadline.watch(conn.sock)  # the deadline (or stop) closes it, whatever phase the fetch is in
            conn.request("GET", target, headers=headers)
            resp = conn.getresponse()
            if resp.status in _REDIRECTS:
                location = resp.getheader("Location") or ""
                nxt = urllib.parse.urljoin(current, location)
                npart = urllib.parse.urlsplit(nxt)
                if first.scheme == "https" and npart.scheme != "https":
                    raise _fetch_error(f"`{url}` redirects from https to `{npart.scheme}`: refused")
                if _origin(npart) != _origin(first) and not options.allow_cross_host_redirects:
                    raise _fetch_error(
                        f"`{url}` redirects to another host `{npart.hostname}`: refused "
                        "(--allow-cross-host-redirects allows it)"
                    )
                current = nxt
                continue
            if resp.status == 304:
                return None, etag
            if resp.status != 200:
                raise _fetch_error(f"bundle server answered {resp.status} for `{url}`")
            length = resp.getheader("Content-Length")
            if length is not None and length.isdigit() and int(length) > options.max_bytes:
                raise BundleError(f"`{url}` is larger than {options.max_bytes} bytes", code="bundle_too_large")
            body = bytearray()
            while chunk := resp.read1(64 * 1024):
                body += chunk
                if len(body) > options.max_bytes:
                    raise BundleError(f"`{url}` is larger than {options.max_bytes} bytes", code="bundle_too_large")
            if deadline.expired or deadline.cancelled:
                raise OSError("closed")
            if length is not None and length.isdigit() and len(body) != int(length):
                raise _fetch_error(f"`{url}` ended after {len(body)} of {length} bytes")
            return bytes(body), resp.getheader("ETag", "") or ""
        finally:
            if resp is not None:
                resp.close()
            conn.close()
            deadline.watch(None)
    raise _fetch_error(f"`{url}` redirects more than {options.max_redirects} times")


# --- the loops ---------------------------------------------------------------


def _guarded(manager: BundleManager, loop: str, step: Callable[[], Any]) -> bool:
    """Run one step of a loop; False when it failed (already recorded)."""
    try:
        step()
        return True
    except ErrorList:
        return False  # a refused bundle: recorded by the manager
    except Exception as exc:
        manager.loop_failed(loop, exc)
        return False


def watch_source(manager: BundleManager, source: str, stop: threading.Event) -> None:
    """Activate a directory or archive on disk whenever it changes (``server.watcher``)."""
    path = Path(source).resolve()

    def changed() -> None:
        _guarded(manager, "source-watcher", lambda: manager.activate_path(path, origin=source))

    while not stop.is_set():
        try:
            watch_path(source, stop, changed)
        except Exception as exc:
            manager.loop_failed("source-watcher", exc)
            stop.wait(_LOOP_PAUSE)


def poll_url(
    manager: BundleManager,
    url: str,
    etag: str,
    interval: float,
    stop: threading.Event,
    *,
    first_delay: float | None = None,
) -> None:
    """Poll an HTTP(S) source; after a failed fetch, retry with exponential backoff and jitter."""
    failures = 0
    delay = interval if first_delay is None else first_delay
    while not stop.wait(delay):
        try:
            etag = manager.load_url(url, etag)
            backing_off = False
        except ErrorList as exc:  # recorded by the manager
            backing_off = any(e.code == "bundle_fetch_failed" for e in exc.errors)
        except Exception as exc:
            manager.loop_failed("source-poller", exc)
            backing_off = True
        if backing_off:  # the server failed: retry sooner, then less and less often
            failures += 1
            delay = backoff(failures, manager.fetch_options.backoff_base, interval)
        else:  # fetched (or a bundle refused): the usual pace
            failures = 0
            delay = interval


def watch_state(manager: BundleManager, stop: threading.Event) -> None:
    """Follow ``active.json``/``shadow.json`` changes made by other processes."""
    import watchfiles

    from server.lifecycle.state import ACTIVE, SHADOW

    assert manager.state is not None
    wanted = {ACTIVE, SHADOW}
    while not stop.is_set():
        try:
            for changes in watchfiles.watch(
                manager.state.path,
                stop_event=stop,
                debounce=50,
                step=20,
                recursive=False,
                rust_timeout=500,
                yield_on_timeout=True,
            ):
                if stop.is_set():
                    return
                if changes and not any(Path(p).name in wanted for _, p in changes):
                    continue
                _guarded(manager, "state-follower", manager.sync_from_state)
        except Exception as exc:
            manager.loop_failed("state-follower", exc)
            stop.wait(_LOOP_PAUSE)
