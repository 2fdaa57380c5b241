"""The loaded policies: load -> validate -> compile -> coverage, then activate atomically.

``Registry.load`` refuses a bundle with any error (an :class:`ErrorList` with
every problem) and keeps the active one. ``active()`` is one attribute read, so
a request always gets one whole revision. Old revisions stay loaded (up to
``keep``) for pinning; their rulesets are freed when they drop out.
"""

from __future__ import annotations

import threading
from pathlib import Path

from server.bundle import bundle_directory, load_bundle
from server.cases import load_cases, run_cases
from server.decide import Decider, RetiredError
from server.errors import ErrorList, NoBundleError, PolicyError, ValidationError
from server.model import Decision, Snapshot
from server.validate import coverage_errors, validate

__all__ = ["Registry", "build_decider"]


def build_decider(path: str | Path, *, run_tests: bool = False, verification_key: str | Path | None = None) -> Decider:
    """Load, validate, compile and coverage-check a bundle (and run its own cases).

    Raises ErrorList with every error; nothing is activated here.
    """
    with bundle_directory(path, verification_key=verification_key) as root:
        bundle = load_bundle(root)
        errors = validate(bundle)
        if errors:
            raise ErrorList(errors)
        decider = Decider(bundle)
        try:
            errors = coverage_errors(bundle, decider)
            if not errors and run_tests:
                errors = _case_errors(decider, root)
        except Exception:
            decider.close()
            raise
    if errors:
        decider.close()
        raise ErrorList(errors)
    return decider


def _case_errors(decider: Decider, root: Path) -> list[PolicyError]:
    failed = [r for r in run_cases(decider, load_cases(root)) if not r.passed]
    return [
        ValidationError(
            f"test case `{r.case.name}` fails: {'; '.join(r.differences)}",
            code="bundle_test_failed",
            location=r.case.location,
        )
        for r in failed
    ]


class Registry:
    """Holds the active decider and the last ``keep`` revisions, by revision."""

    def __init__(self, keep: int = 3) -> None:
        self._keep = keep
        self._lock = threading.Lock()
        self._active: Decider | None = None
        self._loaded: dict[str, Decider] = {}

    def load(self, path: str | Path) -> Decider:
        """Load a bundle and make it active (the old one stays active on error)."""
        return self.activate(build_decider(path))

    def activate(self, decider: Decider) -> Decider:
        """Make an already built decider the active one."""
        with self._lock:
            old = self._loaded.pop(decider.ref.revision, None)
            self._loaded[decider.ref.revision] = decider
            self._active = decider
            dropped = list(self._loaded)[: max(0, len(self._loaded) - self._keep)]
            retired = [self._loaded.pop(rev) for rev in dropped]
        for d in ([old] if old is not None and old is not decider else []) + retired:
            # INVARIANT: a retired decider is never active; its rulesets are freed
            # by the last in-flight request that uses it (Decider.close_when_unused).
            d.close_when_unused()
        return decider

    def active(self) -> Decider | None:
        """The active decider, or None before the first successful load."""
        return self._active

    def get(self, revision: str = "") -> Decider:
        """The active decider, or a loaded revision; NoBundleError when there is none."""
        if not revision:
            active = self._active
            if active is None:
                raise NoBundleError("no bundle is loaded")
            return active
        found = self._loaded.get(revision)
        if found is None:
            raise NoBundleError(f"revision `{revision}` is not loaded", code="revision_not_loaded")
        return found

    def decide(self, snapshot: Snapshot, revision: str = "") -> Decision:
        """Decide with the active (or a pinned) revision; one revision decides it all."""
        for _ in range(3):
            decider = self.get(revision)
            try:
                return decider.decide(snapshot)
            except RetiredError:
                continue  # swapped between lookup and use: take the new one
        raise NoBundleError("the bundle kept changing during the decision")

    def revisions(self) -> list[str]:
        """Loaded revisions, oldest first."""
        return list(self._loaded)
