"""A bundle's own test cases (``tests/*.yaml``): loading and running them.

Cerbos-style suites written by policy owners: fixtures, a pinned ``now``, the
snapshot and the expected outcome, reasons and follow-ups (or the error field).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.bundle import Bundle, checked_yaml
from server.bundle.yamlio import line_of, plain
from server.decide import Decider
from server.errors import ErrorList, Location, PolicyError, SnapshotError, ValidationError, did_you_mean
from server.facts import APPOINTMENT_READS, ORDER_READS, parse_json_object, parse_timestamp
from server.model import Decision, Snapshot

__all__ = ["Case", "CaseResult", "case_errors", "load_cases", "run_case", "run_cases"]


@dataclass(frozen=True)
class Case:
    """One test case of a bundle."""

    name: str
    action: str
    now_text: str
    order: Any
    appointment: Any
    expect: dict[str, Any]
    location: Location
    order_json: str | None = None
    appointment_json: str | None = None

    @property
    def snapshot(self) -> Snapshot:
        """The request this case sends (raises SnapshotError for an invalid ``order_json``/``now``)."""
        order = parse_json_object(self.order_json, "order", ORDER_READS) if self.order_json is not None else self.order
        appointment = self.appointment
        if self.appointment_json is not None:
            appointment = parse_json_object(self.appointment_json, "appointment", APPOINTMENT_READS)
        now = parse_timestamp(self.now_text, "now")
        return Snapshot(action=self.action, order=order, appointment=appointment, now=now)


@dataclass
class CaseResult:
    """A case and what went wrong (no differences: passed)."""

    case: Case
    differences: list[str] = field(default_factory=list)
    decision: Decision | None = None
    error: SnapshotError | None = None

    @property
    def passed(self) -> bool:
        return not self.differences


def _deep_merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = (
                _deep_merge(base.get(k), v)
                if isinstance(v, dict) and isinstance(base.get(k), dict)
                else copy.deepcopy(v)
            )
        return out
    return copy.deepcopy(patch)


def _delete(doc: dict[str, Any], dotted: str) -> None:
    parts = dotted.split(".")
    node: Any = doc
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(parts[-1], None)


def _resolve(value: Any, fixtures: dict[str, Any], kind: str, file: str, line: int, errors: list[PolicyError]) -> Any:
    if not (isinstance(value, dict) and "fixture" in value):
        return value
    name = value["fixture"]
    if name not in fixtures:
        errors.append(
            ValidationError(
                f"unknown {kind} fixture `{name}`",
                code="validation_unknown_fixture",
                location=Location(file, line),
                hint=did_you_mean(name, fixtures),
            )
        )
        return None
    # A deep copy: `without` must never edit the shared fixture other cases use.
    doc = _deep_merge(copy.deepcopy(fixtures[name]), value.get("with") or {})
    for dotted in value.get("without") or []:
        _delete(doc, dotted)
    return doc


def load_cases(bundle_dir: str | Path) -> list[Case]:
    """Every case of ``bundle_dir/tests/*.yaml``; raises ErrorList with every problem."""
    root = Path(bundle_dir)
    errors: list[PolicyError] = []
    cases: list[Case] = []
    names: dict[str, Location] = {}
    for path in sorted((root / "tests").glob("*.yaml")):
        rel = path.relative_to(root).as_posix()
        data, problems = checked_yaml(path.read_text(encoding="utf-8"), rel, "cases")
        errors += problems
        if data is None or problems:
            continue
        fixtures = plain(data.get("fixtures") or {})
        for i, raw in enumerate(data["cases"]):
            loc = Location(rel, line_of(data["cases"], i))
            if raw["name"] in names:
                errors.append(
                    ValidationError(
                        f"duplicate case name `{raw['name']}` (first at {names[raw['name']]})",
                        code="validation_duplicate_case",
                        location=loc,
                    )
                )
                continue
            names[raw["name"]] = loc
            order = _resolve(plain(raw.get("order")), fixtures.get("orders", {}), "order", rel, loc.line, errors)
            appt = _resolve(
                plain(raw.get("appointment")), fixtures.get("appointments", {}), "appointment", rel, loc.line, errors
            )
            cases.append(
                Case(
                    name=raw["name"],
                    action=raw["action"],
                    now_text=str(raw["now"]),
                    order=order,
                    appointment=appt,
                    expect=plain(raw["expect"]),
                    location=loc,
                    order_json=raw.get("order_json"),
                    appointment_json=raw.get("appointment_json"),
                )
            )
    if errors:
        raise ErrorList(errors)
    return cases


def run_case(decider: Decider, case: Case) -> CaseResult:
    """Decide one case and compare with its expectation."""
    result = CaseResult(case)
    exp = case.expect
    try:
        decision = decider.decide(case.snapshot)
    except SnapshotError as exc:
        result.error = exc
        if "error" not in exp:
            result.differences.append(f"expected {exp.get('outcome')}, got an invalid snapshot: {exc}")
        elif exp["error"]["field"] != exc.field:
            result.differences.append(
                f"expected an error on `{exp['error']['field']}`, got one on `{exc.field}`: {exc}"
            )
        return result
    result.decision = decision
    if "error" in exp:
        result.differences.append(
            f"expected an error on `{exp['error']['field']}`, got {decision.outcome}"
            f" {[r.code for r in decision.reasons]}"
        )
        return result
    if decision.outcome != exp["outcome"]:
        result.differences.append(f"outcome: expected {exp['outcome']}, got {decision.outcome}")
    _compare(result, "reasons", sorted(exp["reasons"]), sorted(r.code for r in decision.reasons))
    _compare(result, "follow_ups", sorted(exp["follow_ups"]), sorted(f.code for f in decision.follow_ups))
    if "rules" in exp:
        got = sorted({r.rule_id for r in decision.reasons} | {f.rule_id for f in decision.follow_ups})
        _compare(result, "rules", sorted(exp["rules"]), got)
    if "messages" in exp:
        _compare(result, "messages", sorted(exp["messages"]), sorted(r.message for r in decision.reasons))
    if "follow_up_messages" in exp:
        _compare(
            result,
            "follow_up_messages",
            sorted(exp["follow_up_messages"]),
            sorted(f.message for f in decision.follow_ups),
        )
    if "paths" in exp:
        _compare(result, "paths", sorted(exp["paths"]), sorted(f.path for f in decision.follow_ups if f.path))
    return result


def _compare(result: CaseResult, what: str, expected: list[Any], got: list[Any]) -> None:
    if expected != got:
        missing = [x for x in expected if x not in got]
        extra = [x for x in got if x not in expected]
        result.differences.append(f"{what}: expected {expected}, got {got} (missing {missing}, unexpected {extra})")


def case_errors(bundle: Bundle, cases: list[Case]) -> list[PolicyError]:
    """Expectations naming what the bundle does not have: reason and follow-up codes that
    are not in its catalogue, rule ids no policy of the action defines, unknown actions."""
    errors: list[PolicyError] = []
    for case in cases:
        policy = bundle.policies.get(case.action)
        if policy is None:
            errors.append(
                ValidationError(
                    f"case `{case.name}`: unknown action `{case.action}`",
                    code="validation_unknown_action",
                    location=case.location,
                    hint=did_you_mean(case.action, bundle.policies),
                )
            )
            continue
        checks = (
            ("reasons", "reason", bundle.reasons),
            ("follow_ups", "follow-up", bundle.follow_ups),
            ("rules", "rule", [r.id for r in policy.rules]),
        )
        for key, kind, known in checks:
            for value in case.expect.get(key) or []:
                if value not in known:
                    errors.append(
                        ValidationError(
                            f"case `{case.name}`: unknown {kind} `{value}` in `expect.{key}`",
                            code=f"validation_unknown_{kind.replace('-', '_')}",
                            location=case.location,
                            hint=did_you_mean(value, known),
                        )
                    )
    return errors


def run_cases(decider: Decider, cases: list[Case]) -> list[CaseResult]:
    """Run every case."""
    return [run_case(decider, case) for case in cases]
