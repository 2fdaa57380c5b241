"""The console's pages as template contexts: Matrix, cell detail, Playground, Bundle, Compare.

Nothing here decides or compares by itself: decisions come from ``Decider.decide``,
the matrix, its difference and the impact over samples from ``server.workbench``,
the validation report and the cases from ``check``/``test``'s functions.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from server.console.state import Loaded, View
from server.decide import DEFAULT_RULE_ID, Decider
from server.errors import PolicyError, SnapshotError
from server.facts import parse_json_object, parse_timestamp
from server.model import ALLOW, DENY, Decision, Snapshot
from server.workbench import InputRecord, diff_matrices, matrix, rule_source

__all__ = ["Page", "bundle_page", "cell_page", "compare_page", "matrix_page", "playground_page"]

MAX_SAMPLE_OPTIONS = 500
MAX_EXAMPLES = 5


@dataclass
class Page:
    """A template and its context; ``status`` is the HTTP status."""

    template: str
    context: dict[str, Any] = field(default_factory=dict)
    status: int = 200


def _now(text: str) -> tuple[dt.datetime, SnapshotError | None]:
    """The matrix instant: ``?now=`` (ISO 8601 with offset), else the current second."""
    if text:
        try:
            return parse_timestamp(text, "now"), None
        except SnapshotError as exc:
            error = exc
    else:
        error = None
    return dt.datetime.now(dt.UTC).replace(microsecond=0), error


def _codes(values: Any) -> list[str]:
    return [str(v) for v in values]


# --- matrices -------------------------------------------------------------------------


class _Matrices:
    """The last few matrices computed (a page and the cells clicked on it share one instant)."""

    def __init__(self, size: int = 8) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[Any, ...], Any] = OrderedDict()

    def __call__(self, decider: Decider, now: dt.datetime, compare_with: Sequence[Decider] = ()) -> Any:
        key = (decider, decider.ref.digest, now, tuple(compare_with))
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        result = matrix(decider, now=now, compare_with=compare_with)
        with self._lock:
            self._cache[key] = result
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return result


matrix_of = _Matrices()


# --- rule sources ---------------------------------------------------------------------


@dataclass(frozen=True)
class RuleSource:
    """Where a rule is written, for display."""

    id: str
    location: str
    yaml: str


def rule_sources(decider: Decider, rule_ids: Any) -> list[RuleSource]:
    """The source (``file:line`` and YAML) of each rule id, via ``server.workbench.rule_source``."""
    out = []
    for rule_id in dict.fromkeys(rule_ids):
        if rule_id == DEFAULT_RULE_ID:
            out.append(RuleSource(rule_id, "", "no decisive rule held: the policy's default reason"))
            continue
        try:
            file, line, text = rule_source(decider, rule_id)
        except (KeyError, LookupError, OSError, PolicyError):
            out.append(RuleSource(rule_id, "", "(source not available)"))
            continue
        out.append(RuleSource(rule_id, f"{file}:{line}" if line else str(file), text))
    return out


# --- matrix -----------------------------------------------------------------------------


def _row_text(row: Any) -> str:
    parts = [row.action, row.method, row.status, row.situation, row.outcome, *row.reasons, *row.follow_ups, *row.rules]
    return " ".join(str(p) for p in parts).lower()


def matrix_page(view: View, query: Mapping[str, str]) -> Page:
    """Matrix: every row of ``server.workbench.matrix``, filtered by action, method, outcome, text."""
    now, now_error = _now(query.get("now", ""))
    context: dict[str, Any] = {
        "page": "matrix",
        "now": now,
        "now_error": now_error,
        "query": query,
        "groups": [],
        "methods": [],
        "actions": [],
        "outcomes": [],
        "total": 0,
        "shown": 0,
    }
    decider = view.bundle.decider
    if decider is None:
        return Page("matrix.html", context)
    result = matrix_of(decider, now)
    rows = list(result.rows)
    context["actions"] = sorted({r.action for r in rows})
    context["methods"] = sorted({r.method for r in rows})
    context["outcomes"] = [o for o in (ALLOW, DENY) if any(r.outcome == o for r in rows)] + sorted(
        {r.outcome for r in rows} - {ALLOW, DENY}
    )
    context["total"] = len(rows)
    action, method = query.get("action", ""), query.get("method", "")
    outcome, text = query.get("outcome", ""), query.get("q", "").strip().lower()
    shown = [
        r
        for r in rows
        if (not action or r.action == action)
        and (not method or r.method == method)
        and (not outcome or r.outcome == outcome)
        and (not text or text in _row_text(r))
    ]
    groups: dict[str, list[Any]] = {}
    for row in shown:
        groups.setdefault(row.action, []).append(row)
    context["groups"] = list(groups.items())
    context["shown"] = len(shown)
    context["row_text"] = _row_text
    context["matrix"] = result
    return Page("matrix.html", context)


def find_row(decider: Decider, now: dt.datetime, key: tuple[str, str, str, str]) -> Any:
    """The matrix row with ``key`` (action, method, status, situation), or None."""
    if key[0] not in decider.compiled:
        return None
    whole = matrix_of(decider, now)  # the page's own matrix when it was just shown
    for row in whole.rows:
        if tuple(row.key) == key:
            return row
    return None


def cell_page(view: View, query: Mapping[str, str]) -> Page:
    """One matrix cell: messages, follow-ups with endpoints, rule ids and each rule's source."""
    now, now_error = _now(query.get("now", ""))
    key = (query.get("action", ""), query.get("method", ""), query.get("status", ""), query.get("situation", ""))
    context: dict[str, Any] = {
        "page": "matrix",
        "now": now,
        "now_error": now_error,
        "key": key,
        "row": None,
        "sources": [],
    }
    decider = view.bundle.decider
    if decider is None:
        return Page("cell.html", context)
    row = find_row(decider, now, key)
    if row is None:
        return Page("cell.html", context, status=404)
    context["row"] = row
    context["sources"] = rule_sources(decider, row.rules)
    snapshot = row.snapshot
    context["try_query"] = {
        "action": snapshot.action,
        "order": json.dumps(snapshot.order, indent=2, ensure_ascii=False, default=str),
        "appointment": (
            json.dumps(snapshot.appointment, indent=2, ensure_ascii=False, default=str)
            if snapshot.appointment is not None
            else ""
        ),
        "now": (snapshot.now or now).isoformat(),
    }
    return Page("cell.html", context)


# --- playground --------------------------------------------------------------------------


@dataclass
class Sample:
    """A choice in the playground's sample list: a bundle case or a recorded input."""

    value: str
    label: str
    action: str
    now: str
    order: str
    appointment: str


def _json_text(value: Any) -> str:
    return "" if value is None else json.dumps(value, indent=2, ensure_ascii=False, default=str)


def samples(view: View) -> tuple[list[Sample], list[Sample]]:
    """(the bundle's own cases, the ``--samples`` inputs), at most ``MAX_SAMPLE_OPTIONS`` each."""
    cases = []
    for i, case in enumerate(view.bundle.cases[:MAX_SAMPLE_OPTIONS]):
        order = case.order_json if case.order_json is not None else _json_text(case.order)
        appointment = case.appointment_json if case.appointment_json is not None else _json_text(case.appointment)
        cases.append(Sample(f"case:{i}", case.name, case.action, case.now_text, order, appointment))
    recorded = []
    if view.samples is not None:
        for i, record in enumerate(view.samples.records[:MAX_SAMPLE_OPTIONS]):
            now = record.now.isoformat() if isinstance(record.now, dt.datetime) else str(record.now or "")
            recorded.append(
                Sample(
                    f"sample:{i}",
                    str(record.request_id),
                    record.action,
                    now,
                    _json_text(record.order),
                    _json_text(record.appointment),
                )
            )
    return cases, recorded


@dataclass(frozen=True)
class FieldError:
    """An invalid playground input: the field as the API names it, the message, the input it belongs to."""

    field: str
    message: str
    code: str
    input: str  # order | appointment | now | action | "" (the form as a whole)


def _input_of(field_name: str) -> str:
    for name in ("order", "appointment", "now", "action"):
        if field_name == name or field_name.startswith((f"{name}_", f"{name}.", f"{name}[")):
            return name
    return ""


def decide_form(decider: Decider, form: Mapping[str, str]) -> tuple[Decision | None, FieldError | None]:
    """Decide the playground's inputs as the API would: the same parsing, field names and errors."""
    try:
        order = parse_json_object(form.get("order", ""), "order_json")
        appointment_text = form.get("appointment", "")
        appointment = parse_json_object(appointment_text, "appointment_json") if appointment_text.strip() else None
        now_text = form.get("now", "").strip()
        now = parse_timestamp(now_text, "now") if now_text else None
        return decider.decide(Snapshot(form.get("action", ""), order, appointment, now)), None
    except SnapshotError as exc:
        return None, FieldError(exc.field, exc.message, exc.code, _input_of(exc.field))
    except PolicyError as exc:
        return None, FieldError("", exc.message, exc.code, "")


def playground_page(view: View, query: Mapping[str, str], form: Mapping[str, str] | None) -> Page:
    """Playground: pick a sample or paste JSON, decide with the bundle, see the decision explained."""
    cases, recorded = samples(view)
    chosen = query.get("sample", "") if form is None else form.get("sample", "")
    values = {"action": "cancel_order", "now": "", "order": "", "appointment": ""}
    if form is None:
        by_value = {s.value: s for s in cases + recorded}
        sample = by_value.get(chosen)
        if sample is not None:
            values = {
                "action": sample.action,
                "now": sample.now,
                "order": sample.order,
                "appointment": sample.appointment,
            }
        else:
            chosen = ""
            values.update({k: query[k] for k in values if k in query})
    else:
        values.update({k: form.get(k, "") for k in values})
    if not values["now"]:
        values["now"] = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    context: dict[str, Any] = {
        "page": "playground",
        "cases": cases,
        "recorded": recorded,
        "chosen": chosen,
        "values": values,
        "decision": None,
        "error": None,
        "sources": [],
        "actions": [],
    }
    decider = view.bundle.decider
    if decider is None:
        return Page("playground.html", context)
    context["actions"] = sorted(decider.compiled)
    if form is not None:
        decision, error = decide_form(decider, values)
        context["decision"], context["error"] = decision, error
        if decision is not None:
            context["sources"] = rule_sources(decider, decision.matched_rules)
        # An invalid input is shown on the page (200): the page itself worked.
    return Page("playground.html", context)


# --- bundle ----------------------------------------------------------------------------------


def bundle_page(view: View, query: Mapping[str, str]) -> Page:
    """Bundle: manifest, revision, digest, source, the ``check`` report and the cases with pass/fail."""
    which = "candidate" if query.get("which") == "candidate" and view.candidate is not None else "bundle"
    loaded: Loaded = view.candidate if which == "candidate" and view.candidate is not None else view.bundle
    failed_only = query.get("failed") == "1"
    results = loaded.failed_cases if failed_only else loaded.results
    bundle = loaded.decider.bundle if loaded.decider is not None else None
    return Page(
        "bundle.html",
        {
            "page": "bundle",
            "which": which,
            "loaded": loaded,
            "bundle": bundle,
            "results": results,
            "failed_only": failed_only,
            "passed": len(loaded.results) - len(loaded.failed_cases),
            "failed": len(loaded.failed_cases),
        },
    )


# --- compare -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One changed cell of the matrix, with the columns that changed."""

    key: tuple[str, str, str, str]
    before: Any
    after: Any
    changed: frozenset[str]

    @property
    def kind(self) -> str:
        """``changed``, ``removed`` (only in the bundle) or ``added`` (only in the candidate)."""
        return "added" if self.before is None else "removed" if self.after is None else "changed"


_COLUMNS = ("outcome", "reasons", "follow_ups")


def _changed_columns(before: Any, after: Any) -> frozenset[str]:
    if before is None or after is None:
        return frozenset(_COLUMNS)
    return frozenset(c for c in _COLUMNS if getattr(before, c) != getattr(after, c))


def case_inputs(loaded: Loaded) -> list[Any]:
    """A bundle's own cases as recorded requests (``InputRecord``, id: the case name) to replay.

    Cases whose input does not parse (they test invalid snapshots) are left out: both
    bundles refuse them alike.
    """
    out = []
    for case in loaded.cases:
        try:
            snapshot = case.snapshot
        except SnapshotError:
            continue
        out.append(
            InputRecord(
                case.name,
                snapshot.action,
                snapshot.now,
                snapshot.order,
                snapshot.appointment,
                case.location.file,
                case.location.line,
            )
        )
    return out


def compare_page(view: View, query: Mapping[str, str], impact_of: Any) -> Page:
    """Compare: the matrix difference cell by cell, and the impact over the samples (or the
    bundle's own cases when there are none).

    ``impact_of(view)`` returns the (cached) ``server.workbench.replay`` result or None.
    """
    now, now_error = _now(query.get("now", ""))
    context: dict[str, Any] = {
        "page": "compare",
        "now": now,
        "now_error": now_error,
        "changes": [],
        "total": 0,
        "impact": None,
        "examples": MAX_EXAMPLES,
    }
    old, new = view.bundle.decider, view.candidate.decider if view.candidate is not None else None
    if old is None or new is None:
        return Page("compare.html", context)
    # Each side with the other's situations too: a moved threshold shows as the cells between its values.
    before, after = matrix_of(old, now, [new]), matrix_of(new, now, [old])
    changes = [
        Change(c.key, c.before, c.after, _changed_columns(c.before, c.after)) for c in diff_matrices(before, after)
    ]
    context.update(
        changes=changes,
        total=len(after.rows),
        before=before,
        after=after,
        impact=impact_of(view),
        outcomes=(ALLOW, DENY),
    )
    return Page("compare.html", context)
