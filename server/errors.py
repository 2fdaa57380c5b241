"""Errors of order-policy: one base class, stable codes, Cedar-style messages.

The tree::

    PolicyError                 .code .message .location .hint
    ├── BundleError             bundle_io_error, bundle_parse_error, bundle_manifest_error, ...
    ├── ValidationError         validation_* (schema, unknown names, duplicates, coverage)
    ├── CompileError            compile_* (the engine refused a ruleset)
    ├── EvalError               eval_engine_error (the engine failed on one input)
    ├── SnapshotError           request_invalid (names the offending field)
    └── NoBundleError           no_active_bundle
    ErrorList(PolicyError)      every error of one load, sorted and de-duplicated

``code`` is the contract that tests and clients match on; ``message`` may be
reworded. Messages are one line, start lowercase, have no final period and put
user input in backticks.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Location:
    """Where an error is: a file of the bundle and a 1-based line (0 when unknown)."""

    file: str = ""
    line: int = 0

    def __str__(self) -> str:
        if not self.file:
            return ""
        return f"{self.file}:{self.line}" if self.line else self.file


class PolicyError(Exception):
    """Base of every error the service raises on purpose."""

    code = "policy_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        location: Location | None = None,
        hint: str = "",
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.location = location or Location()
        self.hint = hint

    def __str__(self) -> str:
        where = str(self.location)
        text = f"{where}: {self.message}" if where else self.message
        return f"{text} ({self.hint})" if self.hint else text

    def to_dict(self) -> dict[str, object]:
        """The JSON shape of an error: ``{code, message, file, line, hint}``."""
        return {
            "code": self.code,
            "message": self.message,
            "file": self.location.file,
            "line": self.location.line,
            "hint": self.hint,
        }

    def sort_key(self) -> tuple[str, int, str, str]:
        return (self.location.file, self.location.line, self.code, self.message)


class BundleError(PolicyError):
    """A bundle cannot be read: I/O, YAML syntax, manifest, archive."""

    code = "bundle_io_error"


class ValidationError(PolicyError):
    """A bundle was read but breaks a schema or a semantic rule."""

    code = "validation_error"


class CompileError(PolicyError):
    """The rules engine refused a compiled ruleset."""

    code = "compile_error"


class EvalError(PolicyError):
    """The rules engine failed on one input (never turned into ALLOW)."""

    code = "eval_engine_error"


class SnapshotError(PolicyError):
    """An invalid order/appointment snapshot; ``field`` names the offending field."""

    code = "request_invalid"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field

    def __str__(self) -> str:
        return f"invalid snapshot: `{self.field}`: {self.message}"

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code, "field": self.field, "message": self.message}


class NoBundleError(PolicyError):
    """No bundle (or not the requested revision) is loaded."""

    code = "no_active_bundle"


class ErrorList(PolicyError):
    """Every error found by one load/validate/compile, sorted and de-duplicated."""

    code = "bundle_invalid"

    def __init__(self, errors: Iterable[PolicyError]) -> None:
        unique: dict[tuple[str, int, str, str], PolicyError] = {}
        for error in errors:
            unique.setdefault(error.sort_key(), error)
        self.errors = [unique[key] for key in sorted(unique)]
        first = self.errors[0] if self.errors else None
        summary = f"{len(self.errors)} error(s)" + (f"; first: {first}" if first else "")
        super().__init__(summary)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """A Cedar-style hint naming the closest known name, or an empty string."""
    close = difflib.get_close_matches(str(name), sorted(set(known)), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else ""
