"""Activation: every source becomes a ready revision through one pipeline, then is swapped in.

``BundleManager.activate`` reads the source once (a directory directly, an archive
verified signature first), builds the decider (``server.registry.build_decider``:
validate, compile, coverage, the bundle's own cases), checks its order against the
active revision (signed serial, expiry) and its label against the loaded ones,
persists it, and swaps it in. Any failure, expected or not, is a refusal: the
active revision keeps serving, the error is in ``status`` and the listeners hear
``bundle_refused``.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.bundle import Limits, read_bundle
from server.bundle.archive import archive_bytes, is_archive
from server.bundle.reader import DEFAULT_LIMITS, read_limited
from server.decide import Decider
from server.errors import BundleError, ErrorList, PolicyError
from server.lifecycle import sources
from server.lifecycle.sources import FetchOptions
from server.lifecycle.state import SHADOW, StateDir
from server.registry import Registry, build_decider

__all__ = ["BundleManager", "LoadStatus"]

log = logging.getLogger("order_policy.lifecycle")


@dataclass
class LoadStatus:
    """What the manager last did: shown by the admin API and the logs."""

    source: str = ""
    last_error: str = ""
    last_error_code: str = ""
    last_error_at: str = ""
    last_loaded_at: str = ""
    loads: int = 0
    failures: int = 0
    loop_errors: int = 0  # exceptions caught in a watcher, poller or follower loop
    history: list[dict[str, str]] = field(default_factory=list)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _internal(exc: BaseException) -> ErrorList:
    return ErrorList(
        [
            BundleError(
                f"the bundle could not be loaded: {type(exc).__name__}: {exc}"[:500], code="bundle_internal_error"
            )
        ]
    )


def _frames(exc: BaseException) -> list[str]:
    return [f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno}:{f.name}" for f in traceback.extract_tb(exc.__traceback__)][
        -8:
    ]


class BundleManager:
    """Loads revisions into a :class:`Registry` from a source, an upload or the state directory."""

    def __init__(
        self,
        registry: Registry,
        *,
        state: StateDir | None = None,
        verification_key: str | Path | None = None,
        on_change: Callable[[str, dict[str, Any]], None] | None = None,
        limits: Limits = DEFAULT_LIMITS,
        fetch_options: FetchOptions | None = None,
    ) -> None:
        self.registry = registry
        self.state = state
        self.verification_key = verification_key
        self.limits = limits
        self.fetch_options = fetch_options or FetchOptions(max_bytes=limits.max_archive_bytes)
        self.status = LoadStatus()
        self.shadow: Decider | None = None
        self._listeners: list[Callable[[str, dict[str, Any]], None]] = [on_change] if on_change else []
        self._lock = threading.Lock()  # one activation at a time
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._archives: dict[str, Path] = {}  # digest -> stored archive (for rollback)
        self._serving = False  # only processes that answer requests report as workers
        self._fetches: set[Any] = set()  # deadlines of fetches in flight, cancelled by stop()

    def mark_serving(self) -> None:
        """This process answers requests: report its revision to the state directory from now on."""
        self._serving = True
        active = self.registry.active()
        if self.state is not None and active is not None:
            self.state.report_worker(active)

    def add_listener(self, listener: Callable[[str, dict[str, Any]], None]) -> None:
        """Call ``listener(event, fields)`` after every activation, refusal, loop error and shadow change."""
        self._listeners.append(listener)

    def _on_change(self, event: str, fields: dict[str, Any]) -> None:
        for listener in self._listeners:
            try:
                listener(event, fields)
            except Exception:  # a listener never breaks an activation
                log.exception("bundle listener failed")

    # --- activation ---------------------------------------------------------

    def activate(
        self,
        source: str | Path | bytes,
        *,
        origin: str,
        persist: bool = True,
        run_tests: bool = True,
        check_order: bool = True,
    ) -> Decider:
        """Read, verify, validate, test and compile a source, then swap it in. Raises ErrorList.

        ``source`` is a directory, an archive path or archive bytes. ``run_tests=False``
        and ``check_order=False`` are for revisions another process already activated
        (followers of the state directory): digests, signature and validation still hold.
        """
        with self._lock:
            try:
                return self._activate(source, origin, persist, run_tests, check_order)
            except ErrorList as exc:
                self._failed(origin, exc)
                raise
            except Exception as exc:  # a bug or the environment (disk full, ...): still a refusal
                log.error(
                    "bundle_internal_error",
                    extra={"fields": {"origin": origin, "error_type": type(exc).__name__, "frames": _frames(exc)}},
                )
                err = _internal(exc)
                self._failed(origin, err)
                raise err from None

    def _activate(
        self, source: str | Path | bytes, origin: str, persist: bool, run_tests: bool, check_order: bool
    ) -> Decider:
        if not isinstance(source, bytes) and is_archive(source):
            source = self._read_file(source)
        files = read_bundle(source, verification_key=self.verification_key, limits=self.limits)
        decider = build_decider(files, run_tests=run_tests)
        active = self.registry.active()
        if active is not None and active.ref.digest == decider.ref.digest:
            decider.close()
            return active
        try:
            problems = self._order_errors(decider, active) if check_order else []
            reused = self.registry.conflict(decider)
            if reused is not None:
                problems.append(reused)
            if problems:
                raise ErrorList(problems)
            if persist and self.state is not None:
                data = source if isinstance(source, bytes) else archive_bytes(files.files, files.manifest)
                self._persist(decider, data)
            self.registry.activate(decider)
        except BaseException:
            decider.close()
            raise
        self._loaded(origin, decider)
        return decider

    def _read_file(self, path: str | Path) -> bytes:
        try:
            return read_limited(path, self.limits.max_archive_bytes)
        except BundleError as exc:
            raise ErrorList([exc]) from None

    def _persist(self, decider: Decider, data: bytes) -> None:
        assert self.state is not None
        try:
            stored = self.state.store(data)
            self.state.set_active(decider, stored)
        except OSError as exc:
            raise ErrorList(
                [
                    BundleError(
                        f"cannot write the state directory `{self.state.path}`: {exc.strerror or exc}",
                        code="state_write_failed",
                    )
                ]
            ) from None
        self._archives[decider.ref.digest] = stored

    def _order_errors(self, decider: Decider, active: Decider | None) -> list[PolicyError]:
        """A newer bundle only: a higher signed serial than the active one's, not expired."""
        problems: list[PolicyError] = []
        bundle = decider.bundle
        if bundle.expires is not None:
            expires = dt.datetime.fromisoformat(bundle.expires)
            if expires <= dt.datetime.now(dt.UTC):
                problems.append(BundleError(f"the bundle expired at {bundle.expires}", code="bundle_expired"))
        current = active.bundle.serial if active is not None else None
        if current is not None and (bundle.serial is None or bundle.serial <= current):
            shown = "no serial" if bundle.serial is None else f"serial {bundle.serial}"
            problems.append(
                BundleError(
                    f"revision `{bundle.revision}` has {shown}, not above the active revision's serial {current}: "
                    "an older bundle comes back only by an explicit rollback",
                    code="bundle_downgrade",
                )
            )
        return problems

    def activate_archive(
        self, data: bytes, *, origin: str, persist: bool = True, run_tests: bool = True, check_order: bool = True
    ) -> Decider:
        """Activate archive bytes (an upload, a download, a stored revision)."""
        return self.activate(data, origin=origin, persist=persist, run_tests=run_tests, check_order=check_order)

    def activate_path(self, path: str | Path, *, origin: str = "") -> Decider:
        """A directory (read directly) or an archive file on disk."""
        return self.activate(path, origin=origin or str(path))

    activate_directory = activate_path

    def rollback(self, revision: str) -> Decider:
        """Make a loaded revision active again (and persist that): the only way back to a lower serial."""
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
            try:
                decider = build_decider(
                    data, run_tests=run_tests, verification_key=self.verification_key, limits=self.limits
                )
            except ErrorList:
                raise
            except Exception as exc:
                raise _internal(exc) from None
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

    def _failed(self, origin: str, exc: ErrorList) -> None:
        self.status.failures += 1
        self.status.last_error = f"{origin}: {exc.errors[0] if exc.errors else exc}"
        self.status.last_error_code = exc.errors[0].code if exc.errors else ""
        self.status.last_error_at = _now()
        self._history("refused", origin, self.status.last_error)
        self._on_change(
            "bundle_refused",
            {
                "origin": origin,
                "error": self.status.last_error,
                "code": exc.errors[0].code if exc.errors else "",
                "errors": len(exc.errors),
            },
        )

    def loop_failed(self, loop: str, exc: BaseException) -> None:
        """A background loop caught ``exc``: log it as one JSON line, count it, show it; the loop goes on."""
        self.status.loop_errors += 1
        log.error(
            "bundle_loop_error",
            extra={"fields": {"loop": loop, "error_type": type(exc).__name__, "frames": _frames(exc)}},
        )
        self._failed(loop, _internal(exc))

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
            try:
                data = self.state.archive_path(shadow).read_bytes()
                self.set_shadow_archive(data, persist=False, run_tests=False)
            except (ErrorList, OSError, ValueError):
                pass  # a damaged shadow is not served; the active revision is unaffected
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
        try:
            path = self.state.archive_path(record)
            data = path.read_bytes()
        except (OSError, ValueError):
            return None
        try:
            decider = self.activate(
                data, origin=f"state {path.name}", persist=False, run_tests=False, check_order=False
            )
        except ErrorList:
            return None
        self._archives[decider.ref.digest] = path
        return decider

    # --- sources ---------------------------------------------------------------

    def watch_state(self) -> None:
        """Follow ``active.json``/``shadow.json`` changes made by other processes (a thread)."""
        assert self.state is not None
        self._spawn("state-follower", lambda: sources.watch_state(self, self._stop))

    def watch_source(self, source: str) -> None:
        """Keep loading a directory or archive on disk when it changes (watchfiles)."""
        self.status.source = source
        self._spawn("source-watcher", lambda: sources.watch_source(self, source, self._stop))

    def watch_url(self, url: str, *, etag: str = "", poll_interval: float = 30.0, fetch_now: bool = False) -> None:
        """Poll an HTTP(S) bundle server with If-None-Match every ``poll_interval`` seconds
        (the first fetch at once with ``fetch_now``)."""
        self.status.source = url
        self._spawn(
            "source-poller",
            lambda: sources.poll_url(
                self, url, etag, poll_interval, self._stop, first_delay=0.0 if fetch_now else None
            ),
        )

    def fetch_url(self, url: str, etag: str = "") -> tuple[bytes | None, str]:
        """GET the bundle with If-None-Match within one deadline; (None, etag) when unchanged (304)."""
        holder: list[Any] = []

        def started(deadline: Any) -> None:
            holder.append(deadline)
            self._fetches.add(deadline)
            if self._stop.is_set():
                deadline.cancel()

        try:
            return sources.fetch(url, etag, self.fetch_options, on_start=started)
        finally:
            for deadline in holder:
                self._fetches.discard(deadline)

    def load_url(self, url: str, etag: str = "") -> str:
        """Fetch and activate once; returns the new ETag. Raises ErrorList on failure."""
        try:
            data, new_etag = self.fetch_url(url, etag)
        except BundleError as exc:
            err = ErrorList([exc])
            self._failed(url, err)
            raise err from None
        if data is not None:
            self.activate(data, origin=url)
        return new_etag

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        """Stop watching and polling (a fetch in flight is cut off)."""
        self._stop.set()
        for deadline in list(self._fetches):
            deadline.cancel()
        for thread in self._threads:
            thread.join(timeout=5)
