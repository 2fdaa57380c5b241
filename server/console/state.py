"""What the console shows: the bundle, the candidate and the samples, loaded and kept current.

A source is loaded the way ``order-policy check`` and ``order-policy test`` see it
(``check_bundle``, ``load_cases``, ``run_cases``): a bundle with errors is not loaded
(its located errors are shown instead, as ``serve`` would refuse it); a bundle whose
own cases fail is loaded (its matrix is what a policy owner wants to see while
editing) and the failures are shown. Each change of a watched file builds a new
:class:`View`; a page renders one whole view.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.bundle import bundle_directory
from server.cases import Case, CaseResult, load_cases, run_cases
from server.cli.bundle_check import check_bundle
from server.decide import Decider
from server.errors import BundleError, ErrorList, PolicyError
from server.watcher import watch_path

__all__ = ["ConsoleState", "Loaded", "Samples", "View", "load_samples", "load_source"]

log = logging.getLogger("order_policy.console")

MAX_CASES = 5000


@dataclass
class Loaded:
    """One bundle source as ``check`` and ``test`` see it."""

    source: str
    decider: Decider | None
    errors: list[PolicyError]
    report: dict[str, Any]
    warnings: list[PolicyError] = field(default_factory=list)
    cases: list[Case] = field(default_factory=list)
    results: list[CaseResult] = field(default_factory=list)
    loaded_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    root: Path | None = None  # the unpacked copy the decider's rules were read from

    @property
    def ok(self) -> bool:
        """The bundle loaded: there is a decider to decide with."""
        return self.decider is not None

    @property
    def failed_cases(self) -> list[CaseResult]:
        return [r for r in self.results if not r.passed]


@dataclass
class Samples:
    """The recorded inputs of ``--samples`` (at most ``limit``), and the lines that were not inputs."""

    source: str
    records: list[Any] = field(default_factory=list)  # server.workbench.InputRecord
    errors: list[Any] = field(default_factory=list)  # server.workbench.InputError
    truncated: bool = False


@dataclass
class View:
    """Everything one page shows, from one moment: ``generation`` counts reloads."""

    generation: int
    bundle: Loaded
    candidate: Loaded | None
    samples: Samples | None


def load_source(source: str, workdir: Path) -> Loaded:
    """Load a bundle directory or archive into ``workdir`` (kept: rule sources are read from it).

    Never raises for a bad bundle: its errors are in ``Loaded.errors``.
    """
    root = workdir / "bundle"
    try:
        with bundle_directory(source) as unpacked:
            shutil.copytree(unpacked, root)
    except ErrorList as exc:
        return Loaded(source, None, exc.errors, {})
    except OSError as exc:
        error = BundleError(f"cannot read bundle `{source}`: {exc.strerror or exc}", code="bundle_io_error")
        return Loaded(source, None, [error], {})
    decider, errors, report = check_bundle(root, cases=True)  # what `order-policy check` reports
    if errors or decider is None:
        if decider is not None:
            decider.close()
        return Loaded(source, None, errors, report, root=root)
    loaded = Loaded(source, decider, [], report, report.pop("warnings", []), root=root)
    try:
        loaded.cases = load_cases(root)[:MAX_CASES]
    except ErrorList as exc:
        loaded.errors = exc.errors
        return loaded
    loaded.results = run_cases(decider, loaded.cases)
    return loaded


def load_samples(source: str, limit: int) -> Samples:
    """Read ``--samples`` with the workbench's reader; at most ``limit`` inputs are kept."""
    from server.workbench import InputError, read_inputs

    samples = Samples(source)
    try:
        for item in read_inputs(source):
            if isinstance(item, InputError):
                if len(samples.errors) < limit:
                    samples.errors.append(item)
                continue
            if len(samples.records) >= limit:
                samples.truncated = True
                break
            samples.records.append(item)
    except (OSError, PolicyError) as exc:
        samples.errors.append(_ReadError(source, str(exc)))
    return samples


@dataclass(frozen=True)
class _ReadError:
    """A samples source that could not be read at all (shown like an input error)."""

    file: str
    message: str
    line: int = 0

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


def _fingerprint(source: str) -> tuple[tuple[str, int, int], ...]:
    """Name, size and modification time of every file of a source (to notice a change)."""
    path = Path(source)
    try:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    except OSError:
        return ()


class ConsoleState:
    """The current :class:`View`, rebuilt when a watched file changes.

    Thread-safe: ``view()`` is one attribute read; a rebuild swaps the whole view and
    retires the deciders it replaces once no page uses them.
    """

    def __init__(
        self, bundle: str, candidate: str | None = None, samples: str | None = None, *, max_samples: int = 100_000
    ) -> None:
        self.sources = {"bundle": bundle, "candidate": candidate, "samples": samples}
        self.max_samples = max_samples
        self.reload_failures = 0
        self._lock = threading.Lock()  # one rebuild at a time
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._tmp = Path(tempfile.mkdtemp(prefix="order-policy-console-"))
        self._dirs: list[Path] = []  # unpacked bundles, newest last
        self._ready_timeout = 10.0  # how long a watcher may take to start before changes are compared
        self._fingerprints: dict[str, tuple[tuple[str, int, int], ...]] = {}
        if samples:
            self._fingerprints["samples"] = _fingerprint(samples)
        self._view = View(
            0,
            self._load("bundle"),
            self._load("candidate") if candidate else None,
            load_samples(samples, max_samples) if samples else None,
        )

    def view(self) -> View:
        """The current view."""
        return self._view

    def _load(self, which: str) -> Loaded:
        self._fingerprints[which] = _fingerprint(str(self.sources[which]))
        workdir = Path(tempfile.mkdtemp(dir=self._tmp, prefix=f"{which}-"))
        self._dirs.append(workdir)
        return load_source(str(self.sources[which]), workdir)

    def reload(self, which: str) -> View:
        """Rebuild the part ``which`` (bundle, candidate or samples) and swap the view."""
        with self._lock:
            old = self._view
            bundle, candidate, samples = old.bundle, old.candidate, old.samples
            if which == "bundle":
                bundle = self._load("bundle")
            elif which == "candidate":
                candidate = self._load("candidate")
            else:
                self._fingerprints[which] = _fingerprint(str(self.sources[which]))
                samples = load_samples(str(self.sources["samples"]), self.max_samples)
            self._view = View(old.generation + 1, bundle, candidate, samples)
            replaced = {"bundle": old.bundle, "candidate": old.candidate}.get(which)
            if replaced is not None and replaced.decider is not None:
                # INVARIANT: a page that still renders with the old decider finishes first.
                replaced.decider.close_when_unused()
            self._prune(old)
            return self._view

    def _prune(self, old: View) -> None:
        # Keep the unpacked bundles of this view and the one before (a page may still read them).
        keep = {
            loaded.root.parent
            for view in (old, self._view)
            for loaded in (view.bundle, view.candidate)
            if loaded is not None and loaded.root is not None
        }
        for workdir in [d for d in self._dirs if d not in keep]:
            self._dirs.remove(workdir)
            shutil.rmtree(workdir, ignore_errors=True)

    def watch(self, timeout: float = 10.0) -> None:
        """Reload each source when its files change (the watcher ``serve`` uses), in threads.

        Returns once every watcher runs (at most ``timeout`` seconds); a change made before
        that, since the source was loaded, is reloaded then.
        """
        started = []
        for which, source in self.sources.items():
            if source:
                ready = threading.Event()
                thread = threading.Thread(
                    target=self._watch_loop, args=(which, source, ready), name=f"console-watch-{which}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
                started.append(ready)
        for ready in started:
            ready.wait(timeout)

    def _watch_loop(self, which: str, source: str, ready: threading.Event) -> None:
        def changed() -> None:
            try:
                view = self.reload(which)
            except Exception as exc:  # a watcher never dies: log, count, go on with the next change
                self.reload_failures += 1
                log.error("console reload failed", extra={"fields": {"source": which, "error": type(exc).__name__}})
                return
            log.info("console reloaded", extra={"fields": {"source": which, "generation": view.generation}})

        live = threading.Event()

        def caught_up() -> None:
            # Changes between loading and watching are not events: compare what was loaded.
            live.wait(self._ready_timeout)
            if not self._stop.is_set() and _fingerprint(source) != self._fingerprints.get(which):
                changed()
            ready.set()

        threading.Thread(target=caught_up, name=f"console-catch-up-{which}", daemon=True).start()
        failed = False
        while not self._stop.is_set():
            try:
                if failed:
                    changed()  # it may have appeared or changed while it could not be watched
                watch_path(source, self._stop, changed, live)
                return
            except Exception as exc:  # e.g. the path does not exist (yet): try again later
                failed = True
                live.set()
                self.reload_failures += 1
                log.error("console watcher failed", extra={"fields": {"source": which, "error": type(exc).__name__}})
                self._stop.wait(2.0)

    def close(self) -> None:
        """Stop watching, free the rulesets and the unpacked bundles."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        view = self._view
        for loaded in (view.bundle, view.candidate):
            if loaded is not None and loaded.decider is not None:
                loaded.decider.close_when_unused()
        shutil.rmtree(self._tmp, ignore_errors=True)
