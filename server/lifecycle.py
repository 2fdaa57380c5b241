"""Swappable bundles: sources, activation, the persisted last good revision, followers.

* A **source** is a bundle directory or archive on disk (watched with watchfiles)
  or an HTTP(S) URL polled with ``If-None-Match`` (the way OPA pulls bundles).
* **Activation**: a new revision is unpacked, verified (digests; signature with a
  verification key), validated, its own test cases run and compiled beside the
  active one; only then is it persisted and swapped in. Any failure keeps the
  active revision and is recorded in ``status()`` and the metrics.
* The **state directory** holds the archives of recent revisions and
  ``active.json`` (written atomically: temp file, fsync, rename), so a restart,
  even after kill -9 during a swap, serves the last good revision without the
  source.
* Several worker processes stay on one revision by **following** the state
  directory: whoever activates writes ``active.json`` and every worker loads
  what it names.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.bundle.archive import build_archive, is_archive
from server.decide import Decider
from server.errors import BundleError, ErrorList, PolicyError
from server.registry import Registry, build_decider
from server.watcher import watch_path

__all__ = ["BundleManager", "LoadStatus", "StateDir"]

log = logging.getLogger("order_policy.lifecycle")
ACTIVE = "active.json"
SHADOW = "shadow.json"


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` holds the old or the new content, never a mix."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dirfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class StateDir:
    """The persisted bundle state: ``revisions/<digest>.tar.gz``, ``active.json``, ``shadow.json``."""

    def __init__(self, path: str | Path, keep: int = 5) -> None:
        self.path = Path(path)
        self.revisions = self.path / "revisions"
        self.revisions.mkdir(parents=True, exist_ok=True)
        self.keep = keep

    def store(self, archive: bytes) -> Path:
        """Keep an archive by its content digest (idempotent)."""
        target = self.revisions / f"{hashlib.sha256(archive).hexdigest()}.tar.gz"
        if not target.exists():
            _write_atomic(target, archive)
        return target

    def _point(self, name: str, decider: Decider, archive: Path) -> None:
        record = {
            "name": decider.ref.name,
            "revision": decider.ref.revision,
            "digest": decider.ref.digest,
            "archive": archive.name,
            "at": dt.datetime.now(dt.UTC).isoformat(),
        }
        _write_atomic(self.path / name, json.dumps(record, indent=2).encode())

    def set_active(self, decider: Decider, archive: Path) -> None:
        """Record the active revision (atomic)."""
        self._point(ACTIVE, decider, archive)
        self._prune()

    def set_shadow(self, decider: Decider, archive: Path) -> None:
        """Record the shadow candidate (atomic)."""
        self._point(SHADOW, decider, archive)

    def clear_shadow(self) -> None:
        """Forget the shadow candidate."""
        with contextlib.suppress(FileNotFoundError):
            (self.path / SHADOW).unlink()

    def report_worker(self, decider: Decider) -> None:
        """Record which revision this process serves (``workers/<pid>.json``)."""
        workers = self.path / "workers"
        workers.mkdir(exist_ok=True)
        record = {
            "pid": os.getpid(),
            "revision": decider.ref.revision,
            "digest": decider.ref.digest,
            "at": dt.datetime.now(dt.UTC).isoformat(),
        }
        _write_atomic(workers / f"{os.getpid()}.json", json.dumps(record).encode())

    def read(self, name: str = ACTIVE) -> dict[str, Any] | None:
        """The record ``active.json`` (or ``shadow.json``), or None when absent or unreadable."""
        try:
            record = json.loads((self.path / name).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or not (self.revisions / str(record.get("archive", ""))).is_file():
            return None
        return record

    def archive_path(self, record: dict[str, Any]) -> Path:
        """The stored archive a record names."""
        return self.revisions / record["archive"]

    def _prune(self) -> None:
        keep = {r["archive"] for r in (self.read(ACTIVE), self.read(SHADOW)) if r}
        stored = sorted(self.revisions.glob("*.tar.gz"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in stored[self.keep :]:
            if old.name not in keep:
                with contextlib.suppress(FileNotFoundError):
                    old.unlink()


@dataclass
class LoadStatus:
    """What the manager last did: shown by the admin API and the logs."""

    source: str = ""
    last_error: str = ""
    last_error_at: str = ""
    last_loaded_at: str = ""
    loads: int = 0
    failures: int = 0
    history: list[dict[str, str]] = field(default_factory=list)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


class BundleManager:
    """Loads revisions into a :class:`Registry` from a source, an upload or the state directory."""

    def __init__(
        self,
        registry: Registry,
        *,
        state: StateDir | None = None,
        verification_key: str | Path | None = None,
        on_change: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.registry = registry
        self.state = state
        self.verification_key = verification_key
        self.status = LoadStatus()
        self.shadow: Decider | None = None
        self._listeners: list[Callable[[str, dict[str, Any]], None]] = [on_change] if on_change else []
        self._lock = threading.Lock()  # one activation at a time
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._archives: dict[str, Path] = {}  # digest -> stored archive (for rollback)
        self._serving = False  # only processes that answer requests report as workers

    def mark_serving(self) -> None:
        """This process answers requests: report its revision to the state directory from now on."""
        self._serving = True
        active = self.registry.active()
        if self.state is not None and active is not None:
            self.state.report_worker(active)

    def add_listener(self, listener: Callable[[str, dict[str, Any]], None]) -> None:
        """Call ``listener(event, fields)`` after every activation, refusal and shadow change."""
        self._listeners.append(listener)

    def _on_change(self, event: str, fields: dict[str, Any]) -> None:
        for listener in self._listeners:
            try:
                listener(event, fields)
            except Exception:  # a listener never breaks an activation
                log.exception("bundle listener failed")

    # --- activation ---------------------------------------------------------

    def activate_archive(self, data: bytes, *, origin: str, persist: bool = True, run_tests: bool = True) -> Decider:
        """Verify, validate, test and compile an archive, then swap it in. Raises ErrorList.

        ``run_tests=False`` is for revisions another process already activated (their
        own cases passed there); digests, signature and validation are still checked.
        """
        with self._lock:
            try:
                decider = self._build(data, run_tests=run_tests)
            except ErrorList as exc:
                self._failed(origin, exc)
                raise
            active = self.registry.active()
            if active is not None and active.ref.digest == decider.ref.digest:
                decider.close()
                return active
            if persist and self.state is not None:
                stored = self.state.store(data)
                self._archives[decider.ref.digest] = stored
                self.state.set_active(decider, stored)
            self.registry.activate(decider)
            self._loaded(origin, decider)
            return decider

    def activate_directory(self, path: str | Path, *, origin: str) -> Decider:
        """Archive a bundle directory (canonical digests) and activate it."""
        with tempfile.TemporaryDirectory(prefix="order-policy-build-") as tmp:
            out = Path(tmp) / "bundle.tar.gz"
            try:
                build_archive(path, out)
            except PolicyError as exc:
                err = exc if isinstance(exc, ErrorList) else ErrorList([exc])
                self._failed(origin, err)
                raise err from None
            return self.activate_archive(out.read_bytes(), origin=origin)

    def activate_path(self, path: str | Path, *, origin: str = "") -> Decider:
        """A directory or an archive file on disk."""
        origin = origin or str(path)
        if is_archive(path):
            try:
                data = Path(path).read_bytes()
            except OSError as exc:
                err = ErrorList([BundleError(f"cannot read `{path}`: {exc.strerror}", code="bundle_io_error")])
                self._failed(origin, err)
                raise err from None
            return self.activate_archive(data, origin=origin)
        return self.activate_directory(path, origin=origin)

    def rollback(self, revision: str) -> Decider:
        """Make a loaded revision active again (and persist that)."""
        with self._lock:
            decider = self.registry.get(revision)
            stored = self._archives.get(decider.ref.digest)
            if self.state is not None and stored is not None:
                self.state.set_active(decider, stored)
            self.registry.activate(decider)
            self._loaded(f"rollback to {revision}", decider)
            return decider

    def set_shadow_archive(self, data: bytes, *, persist: bool = True, run_tests: bool = True) -> Decider:
        """Load a candidate that decides every request in shadow (its answers are never returned)."""
        with self._lock:
            decider = self._build(data, run_tests=run_tests)
            if persist and self.state is not None:
                self.state.set_shadow(decider, self.state.store(data))
            old, self.shadow = self.shadow, decider
        if old is not None:
            old.close_when_unused()
        self._on_change("shadow_set", {"revision": decider.ref.revision})
        return decider

    def clear_shadow(self, *, persist: bool = True) -> None:
        """Stop shadow evaluation."""
        with self._lock:
            old, self.shadow = self.shadow, None
            if persist and self.state is not None:
                self.state.clear_shadow()
        if old is not None:
            old.close_when_unused()
            self._on_change("shadow_cleared", {"revision": old.ref.revision})

    def _build(self, data: bytes, *, run_tests: bool = True) -> Decider:
        with tempfile.TemporaryDirectory(prefix="order-policy-upload-") as tmp:
            path = Path(tmp) / "bundle.tar.gz"
            path.write_bytes(data)
            return build_decider(path, run_tests=run_tests, verification_key=self.verification_key)

    def _failed(self, origin: str, exc: ErrorList) -> None:
        self.status.failures += 1
        self.status.last_error = f"{origin}: {exc.errors[0] if exc.errors else exc}"
        self.status.last_error_at = _now()
        self._history("refused", origin, self.status.last_error)
        self._on_change(
            "bundle_refused", {"origin": origin, "error": self.status.last_error, "errors": len(exc.errors)}
        )

    def _loaded(self, origin: str, decider: Decider) -> None:
        if self.state is not None and self._serving:
            self.state.report_worker(decider)
        self.status.loads += 1
        self.status.last_loaded_at = _now()
        self._history("activated", origin, decider.ref.revision)
        self._on_change(
            "bundle_activated", {"origin": origin, "revision": decider.ref.revision, "digest": decider.ref.digest[:16]}
        )

    def _history(self, what: str, origin: str, detail: str) -> None:
        self.status.history.append({"at": _now(), "event": what, "origin": origin, "detail": detail[:300]})
        del self.status.history[:-20]

    # --- the state directory -------------------------------------------------

    def restore(self) -> Decider | None:
        """Activate the persisted last good revision (and shadow), if any; None otherwise."""
        if self.state is None:
            return None
        return self.sync_from_state()

    def sync_from_state(self) -> Decider | None:
        """Load whatever ``active.json`` (and ``shadow.json``) name, when it differs from ours."""
        assert self.state is not None
        record = self.state.read()
        result = None
        if record is not None:
            active = self.registry.active()
            if active is not None and active.ref.digest == record["digest"]:
                result = active
            else:
                result = self._follow(record)
        shadow = self.state.read(SHADOW)
        current = self.shadow
        if shadow is None and current is not None:
            self.clear_shadow(persist=False)
        elif shadow is not None and (current is None or current.ref.digest != shadow["digest"]):
            with contextlib.suppress(ErrorList, OSError):
                self.set_shadow_archive(self.state.archive_path(shadow).read_bytes(), persist=False, run_tests=False)
        return result

    def _follow(self, record: dict[str, Any]) -> Decider | None:
        assert self.state is not None
        try:
            loaded = self.registry.get(record["revision"])
            if loaded.ref.digest == record["digest"]:
                with self._lock:
                    self.registry.activate(loaded)
                    self._loaded("state (loaded revision)", loaded)
                return loaded
        except PolicyError:
            pass
        path = self.state.archive_path(record)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        try:
            decider = self.activate_archive(data, origin=f"state {path.name}", persist=False, run_tests=False)
        except ErrorList:
            return None
        self._archives[decider.ref.digest] = path
        return decider

    # --- watching ------------------------------------------------------------

    def watch_state(self) -> None:
        """Follow ``active.json``/``shadow.json`` changes made by other processes (a thread)."""
        assert self.state is not None
        self._spawn("state-follower", self._watch_state_loop)

    def _watch_state_loop(self) -> None:
        import watchfiles

        assert self.state is not None
        wanted = {ACTIVE, SHADOW}
        for changes in watchfiles.watch(
            self.state.path,
            stop_event=self._stop,
            debounce=50,
            step=20,
            recursive=False,
            rust_timeout=500,
            yield_on_timeout=True,
        ):
            if self._stop.is_set():
                return
            if changes and not any(Path(p).name in wanted for _, p in changes):
                continue
            try:
                self.sync_from_state()
            except Exception:  # a follower never dies; the next change retries
                log.exception("state sync failed")

    def watch_source(self, source: str) -> None:
        """Keep loading a directory or archive on disk when it changes (watchfiles)."""
        self.status.source = source
        self._spawn("source-watcher", lambda: self._watch_loop(source))

    def watch_url(self, url: str, *, etag: str = "", poll_interval: float = 30.0) -> None:
        """Poll an HTTP(S) bundle server with If-None-Match every ``poll_interval`` seconds."""
        self.status.source = url
        self._spawn("source-poller", lambda: self._poll_loop(url, etag, poll_interval))

    def _watch_loop(self, source: str) -> None:
        def reload() -> None:
            with contextlib.suppress(ErrorList):
                self.activate_path(Path(source).resolve(), origin=str(source))

        watch_path(source, self._stop, reload)

    def fetch_url(self, url: str, etag: str = "") -> tuple[bytes | None, str]:
        """GET the bundle with If-None-Match; (None, etag) when unchanged (304)."""
        request = urllib.request.Request(url, headers={"If-None-Match": etag} if etag else {})
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return resp.read(32 * 1024 * 1024 + 1), resp.headers.get("ETag", "")
        except urllib.error.HTTPError as exc:
            if exc.code == 304:
                return None, etag
            raise BundleError(f"bundle server answered {exc.code} for `{url}`", code="bundle_fetch_failed") from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise BundleError(
                f"cannot fetch `{url}`: {getattr(exc, 'reason', exc)}", code="bundle_fetch_failed"
            ) from None

    def load_url(self, url: str, etag: str = "") -> str:
        """Fetch and activate once; returns the new ETag. Raises ErrorList on failure."""
        try:
            data, new_etag = self.fetch_url(url, etag)
        except BundleError as exc:
            err = ErrorList([exc])
            self._failed(url, err)
            raise err from None
        if data is not None:
            self.activate_archive(data, origin=url)
        return new_etag

    def _poll_loop(self, url: str, etag: str, interval: float) -> None:
        while not self._stop.wait(interval):
            with contextlib.suppress(ErrorList):
                etag = self.load_url(url, etag)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        """Stop watching and polling."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
