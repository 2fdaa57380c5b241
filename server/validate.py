"""Semantic checks of a loaded bundle; every error is collected, none stops the rest.

Checks: vocabulary consistency; duplicate rule ids; rules naming a fact, value
(status, method, ...), set, param, reason or follow-up the bundle does not
define (with "did you mean"); rule shape per effect; message templates; rules
that can never match; and, with the compiled engine, coverage: every known
status of every method resolves to a decision (none falls through to the
default by accident).
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Iterable
from typing import Any

from server.bundle import Bundle, Rule
from server.bundle.yamlio import line_of
from server.decide import Decider, template_names
from server.engine import MAX_RULES
from server.errors import Location, PolicyError, ValidationError, did_you_mean
from server.facts import FACTS, TEMPLATE_EXTRAS, FactSpec, calendar_end

__all__ = ["coverage_errors", "domain_values", "validate", "warnings"]


def domain_values(bundle: Bundle, spec: FactSpec) -> set[Any] | None:
    """The values a fact can take per the bundle's vocabulary (None: not enumerable)."""
    v = bundle.vocabulary
    if spec.type == "bool":
        return {True, False}
    if spec.values:
        return set(spec.values)
    if spec.domain == "method":
        return set(v.methods)
    if spec.domain == "status":
        return set(v.all_statuses())
    if spec.domain == "high":
        return set(v.top_statuses)
    if spec.domain == "low":
        return {s.split(".")[2] for s in v.all_statuses()}
    if spec.domain == "appointment_status":
        return set(v.appointment_statuses)
    if spec.domain == "provider":
        return set(v.appointment_providers)
    return None


def validate(bundle: Bundle) -> list[PolicyError]:
    """Every semantic error of a bundle (empty when valid); coverage is separate."""
    errors: list[PolicyError] = []
    errors += _vocabulary_errors(bundle)
    errors += _catalogue_errors(bundle)
    seen: dict[str, Location] = {}
    for policy in bundle.policies.values():
        if len(policy.rules) > MAX_RULES:
            errors.append(
                ValidationError(
                    f"policy `{policy.action}` has {len(policy.rules)} rules; at most {MAX_RULES} are allowed",
                    code="validation_too_many_rules",
                    location=policy.location,
                )
            )
        if policy.default_reason not in bundle.reasons:
            errors.append(_unknown("reason", policy.default_reason, bundle.reasons, policy.location))
        for rule in policy.rules:
            if rule.id in seen:
                errors.append(
                    ValidationError(
                        f"duplicate rule id `{rule.id}` (first at {seen[rule.id]})",
                        code="validation_duplicate_rule",
                        location=rule.location,
                    )
                )
            else:
                seen[rule.id] = rule.location
            errors += _rule_errors(bundle, rule, policy.combining)
    errors += _suspect_vocabulary_entries(bundle, errors)
    return errors


def _suspect_vocabulary_entries(bundle: Bundle, errors: list[PolicyError]) -> list[PolicyError]:
    """A rule naming a status the vocabulary lacks, where the vocabulary lists a near
    spelling: the vocabulary entry may be the misspelt one. Report it there, once, and
    point each rule's error at it."""
    file = "data/vocabulary.yaml"
    known = sorted(bundle.vocabulary.all_statuses())
    suspects: dict[str, list[str]] = {}
    for e in errors:
        if e.code != "validation_unknown_status" or not e.message.startswith("unknown status `"):
            continue
        named = e.message[len("unknown status `") : -1]
        close = difflib.get_close_matches(named, known, n=1, cutoff=0.8)
        if not close or close[0] in bundle.vocabulary.aliases or not _more_usual(named, close[0], known):
            continue
        line = _line_naming(bundle, file, close[0])
        e.hint = (
            f"did you mean `{close[0]}`? if `{named}` is the right spelling, the vocabulary entry "
            f"`{close[0]}` ({file}:{line}) is misspelt"
        )
        suspects.setdefault(close[0], []).append(f"`{named}` ({e.location})")
    return [
        ValidationError(
            f"status `{entry}` may be misspelt: rules name {', '.join(named)}, which the vocabulary does not list",
            code="validation_suspect_status",
            location=Location(file, _line_naming(bundle, file, entry)),
            hint="correct the spelling here, or in the rules",
        )
        for entry, named in sorted(suspects.items())
    ]


def _more_usual(named: str, listed: str, known: list[str]) -> bool:
    """Whether the rule's spelling looks right and the vocabulary's wrong: the parts where
    they differ (HIGH, METHOD, LOW) are used by other listed statuses for ``named`` only."""

    def uses(part: str, i: int) -> int:
        return sum(1 for s in known if s.split(".")[i] == part)

    a, b = named.split("."), listed.split(".")
    if len(a) != 3 or len(b) != 3:
        return False
    differ = [i for i in range(3) if a[i] != b[i]]
    return bool(differ) and all(uses(a[i], i) > uses(b[i], i) for i in differ)


def _line_naming(bundle: Bundle, file: str, word: str) -> int:
    """The first line of the bundle's ``file`` that names ``word`` (0 when unknown)."""
    try:
        lines = (bundle.root / file).read_text(encoding="utf-8").splitlines()
    except OSError:
        return 0
    pattern = re.compile(rf"(?<![\w.]){re.escape(word)}(?![\w.])")
    return next((i for i, text in enumerate(lines, 1) if pattern.search(text)), 0)


# --- warnings: valid, but probably not what the owner meant -------------------------


def warnings(bundle: Bundle, decider: Decider, *, today: dt.date | None = None) -> list[PolicyError]:
    """What ``check`` reports without failing: allow rules that deny rules shadow for every
    status they name, and a business-day calendar that ends within 12 months of ``today``."""
    return [*_shadowed_allow_rules(bundle, decider), *_calendar_warnings(bundle, today or dt.date.today())]


def _named_statuses(when: dict[str, Any]) -> list[str]:
    m = when.get("status")
    if isinstance(m, str):
        return [m]
    if isinstance(m, dict) and isinstance(m.get("in"), list):
        return [s for s in m["in"] if isinstance(s, str)]
    return []


def _shadowed_allow_rules(bundle: Bundle, decider: Decider) -> list[PolicyError]:
    out: list[PolicyError] = []
    for action, policy in sorted(bundle.policies.items()):
        if policy.combining != "deny_overrides":
            continue
        compiled = decider.compiled[action].rules
        for rule in policy.rules:
            named = _named_statuses(rule.when) if rule.effect == "allow" else []
            if not named:
                continue
            shadows: set[str] = set()
            for status in named:
                facts = {
                    "ship_day": "later",
                    "appointment_has_start": False,
                    "appointment_notice_seconds": 0,
                    "appointment_present": False,
                    **_status_facts(bundle, status.split(".")[1], status),
                }
                denying = [r for r in decider.match(action, facts) if compiled[r].effect == "deny"]
                if not denying:
                    break
                shadows.update(denying)
            else:
                which = ", ".join(f"`{r}`" for r in sorted(shadows))
                out.append(
                    ValidationError(
                        f"allow rule `{rule.id}` can never allow: deny rule {which} also matches every status it "
                        f"names, and deny overrides allow",
                        code="warning_shadowed_allow",
                        location=rule.location,
                        hint="remove those statuses from the allow rule, or from the deny rule",
                    )
                )
    return out


def _calendar_warnings(bundle: Bundle, today: dt.date) -> list[PolicyError]:
    end = calendar_end(bundle.settings)
    if end is None or end >= today + dt.timedelta(days=365):
        return []
    name = bundle.settings.calendar
    setting = f"calendars.{name}.holidays" if name else "calendars"
    return [
        ValidationError(
            f"the business-day calendar ends on {end.isoformat()}, within 12 months of today ({today.isoformat()}): "
            f"ship days after it are errors",
            code="warning_calendar_ends",
            location=Location("data/settings.yaml", _line_naming(bundle, "data/settings.yaml", "holidays")),
            hint=f"add the next year's holidays to `{setting}`",
        )
    ]


def _unknown(kind: str, name: Any, known: Iterable[Any], location: Location) -> ValidationError:
    return ValidationError(
        f"unknown {kind} `{name}`",
        code=f"validation_unknown_{kind.replace(' ', '_')}",
        location=location,
        hint=did_you_mean(str(name), [str(k) for k in known]),
    )


def _vocabulary_errors(bundle: Bundle) -> list[PolicyError]:
    v = bundle.vocabulary
    file = "data/vocabulary.yaml"
    errors: list[PolicyError] = []
    for method, statuses in sorted(v.methods.items()):
        for status in sorted(statuses):
            high, smethod, _ = status.split(".")
            if smethod != method:
                errors.append(
                    ValidationError(
                        f"status `{status}` is listed under method `{method}`",
                        code="validation_status_method",
                        location=Location(file),
                    )
                )
            if high not in v.top_statuses:
                errors.append(_unknown("top status", high, v.top_statuses, Location(file)))
    known = {s for ss in v.methods.values() for s in ss}
    for alias, target in sorted(v.aliases.items()):
        if target not in known:
            errors.append(_unknown("status", target, known, Location(file)))
        if alias in known:
            errors.append(
                ValidationError(
                    f"alias `{alias}` is also a listed status",
                    code="validation_alias_conflict",
                    location=Location(file),
                )
            )
        if alias.split(".")[1] != target.split(".")[1]:
            errors.append(
                ValidationError(
                    f"alias `{alias}` and `{target}` name different methods",
                    code="validation_alias_conflict",
                    location=Location(file),
                )
            )
    return errors


def _catalogue_errors(bundle: Bundle) -> list[PolicyError]:
    allowed = set(FACTS) | set(TEMPLATE_EXTRAS) | set(bundle.settings.params)
    errors: list[PolicyError] = []
    for entry in [*bundle.reasons.values(), *bundle.follow_ups.values()]:
        for text in (entry.message, entry.path):
            try:
                names = template_names(text)
            except ValueError as exc:
                errors.append(
                    ValidationError(
                        f"`{entry.code}`: invalid template: {exc}", code="validation_template", location=entry.location
                    )
                )
                continue
            for name in names:
                if name not in allowed:
                    errors.append(
                        ValidationError(
                            f"`{entry.code}`: unknown template variable `{name}`",
                            code="validation_template",
                            location=entry.location,
                            hint=did_you_mean(name, allowed),
                        )
                    )
        if bool(entry.http_method) != bool(entry.path):
            errors.append(
                ValidationError(
                    f"`{entry.code}`: `http_method` and `path` go together",
                    code="validation_schema_error",
                    location=entry.location,
                )
            )
    return errors


def _rule_errors(bundle: Bundle, rule: Rule, combining: str) -> list[PolicyError]:
    errors: list[PolicyError] = []
    loc = rule.location
    raw = rule.raw or {}
    decisive = rule.effect in ("allow", "deny")
    if decisive and not rule.reasons:
        errors.append(
            ValidationError(
                f"rule `{rule.id}`: an {rule.effect} rule needs `reasons`", code="validation_rule_shape", location=loc
            )
        )
    if rule.effect == "advise":
        if not rule.follow_ups:
            errors.append(
                ValidationError(
                    f"rule `{rule.id}`: an advise rule needs `follow_ups`", code="validation_rule_shape", location=loc
                )
            )
        if rule.reasons:
            errors.append(
                ValidationError(
                    f"rule `{rule.id}`: an advise rule gives no `reasons`", code="validation_rule_shape", location=loc
                )
            )
    elif "on" in raw:
        errors.append(
            ValidationError(
                f"rule `{rule.id}`: `on` applies to advise rules only", code="validation_rule_shape", location=loc
            )
        )
    if rule.effect == "invalid" and not rule.error_field:
        errors.append(
            ValidationError(
                f"rule `{rule.id}`: an invalid rule needs `error`", code="validation_rule_shape", location=loc
            )
        )
    if rule.effect != "invalid" and "error" in raw:
        errors.append(
            ValidationError(
                f"rule `{rule.id}`: `error` applies to invalid rules only", code="validation_rule_shape", location=loc
            )
        )
    for code in rule.reasons:
        if code not in bundle.reasons:
            errors.append(_unknown("reason", code, bundle.reasons, Location(loc.file, line_of(raw, "reasons"))))
    for code in rule.follow_ups:
        if code not in bundle.follow_ups:
            errors.append(
                _unknown("follow-up", code, bundle.follow_ups, Location(loc.file, line_of(raw, "follow_ups")))
            )
    cond_errors = _condition_errors(bundle, rule, rule.when, raw.get("when"))
    errors += cond_errors
    if not cond_errors:
        problem = _contradiction(bundle, rule.when)
        if problem:
            errors.append(
                ValidationError(
                    f"rule `{rule.id}` can never match: {problem}", code="validation_never_matches", location=loc
                )
            )
    return errors


def _condition_errors(bundle: Bundle, rule: Rule, when: dict[str, Any], node: Any) -> list[PolicyError]:
    errors: list[PolicyError] = []
    for key, m in when.items():
        line = line_of(node, key) if node is not None else rule.location.line
        loc = Location(rule.location.file, line)
        if key in ("any", "all"):
            for i, sub in enumerate(m):
                errors += _condition_errors(bundle, rule, sub, m[i] if isinstance(m, list) else None)
            continue
        spec = FACTS.get(key)
        if spec is None:
            errors.append(_unknown("fact", key, FACTS, loc))
            continue
        errors += _matcher_errors(bundle, rule, key, spec, m, loc)
    return errors


def _matcher_errors(bundle: Bundle, rule: Rule, fact: str, spec: FactSpec, m: Any, loc: Location) -> list[PolicyError]:
    domain = domain_values(bundle, spec)
    errors: list[PolicyError] = []

    def check_values(values: Iterable[Any]) -> None:
        for value in values:
            if spec.type == "int":
                errors.append(
                    ValidationError(
                        f"rule `{rule.id}`: `{fact}` is a number: compare it with gt/gte/lt/lte",
                        code="validation_type",
                        location=loc,
                    )
                )
                return
            if spec.type == "bool" and not isinstance(value, bool):
                errors.append(
                    ValidationError(
                        f"rule `{rule.id}`: `{fact}` is true or false, not `{value}`",
                        code="validation_type",
                        location=loc,
                    )
                )
            elif spec.type == "string" and not isinstance(value, str):
                errors.append(
                    ValidationError(
                        f"rule `{rule.id}`: `{fact}` is a string, not `{value}`", code="validation_type", location=loc
                    )
                )
            elif domain is not None and value not in domain:
                kind = (spec.domain or "value").replace("_", " ")
                errors.append(_unknown(kind, value, [str(d) for d in domain], loc))

    if not isinstance(m, dict):
        check_values([m])
        return errors
    for op, arg in m.items():
        if op in ("in", "not_in"):
            check_values(arg)
        elif op in ("in_set", "not_in_set"):
            if arg not in bundle.vocabulary.sets:
                errors.append(_unknown("set", arg, bundle.vocabulary.sets, loc))
            else:
                check_values(bundle.vocabulary.sets[arg])
        elif op == "exists":
            if spec.type != "string":
                errors.append(
                    ValidationError(
                        f"rule `{rule.id}`: `exists` applies to string facts only", code="validation_type", location=loc
                    )
                )
        else:
            if spec.type != "int":
                errors.append(
                    ValidationError(
                        f"rule `{rule.id}`: `{op}` compares numbers; `{fact}` is not one",
                        code="validation_type",
                        location=loc,
                    )
                )
            if isinstance(arg, dict):
                name = arg.get("param")
                value = bundle.settings.params.get(name) if isinstance(name, str) else None
                if name not in bundle.settings.params:
                    errors.append(_unknown("param", name, bundle.settings.params, loc))
                elif not isinstance(value, int) or isinstance(value, bool):
                    errors.append(
                        ValidationError(
                            f"rule `{rule.id}`: param `{name}` is not a number or duration",
                            code="validation_type",
                            location=loc,
                        )
                    )
    return errors


# --- rules that can never match ------------------------------------------------

_ANY = object()


def _allowed(bundle: Bundle, when: dict[str, Any]) -> list[dict[str, Any]]:
    """Disjunctive normal form of a condition: a list of {fact: allowed values or range}."""
    branches: list[dict[str, Any]] = [{}]
    for key, m in when.items():
        if key == "all":
            for sub in m:
                branches = [_merge(a, b) for a in branches for b in _allowed(bundle, sub)]
        elif key == "any":
            alternatives = [b for sub in m for b in _allowed(bundle, sub)]
            branches = [_merge(a, b) for a in branches for b in alternatives]
        else:
            branches = [_merge(a, {key: _values(bundle, key, m)}) for a in branches]
    return branches


def _values(bundle: Bundle, fact: str, m: Any) -> Any:
    spec = FACTS[fact]
    domain = domain_values(bundle, spec)
    full: set[Any] | None = None if domain is None else ({*domain, None} if spec.type == "string" else set(domain))
    if not isinstance(m, dict):
        return {m}
    out: Any = full
    lo, hi = float("-inf"), float("inf")
    numeric = False
    for op, arg in m.items():
        if op in ("in", "in_set"):
            vals = set(bundle.vocabulary.sets[arg]) if op == "in_set" else set(arg)
            out = vals if out is None else out & vals
        elif op in ("not_in", "not_in_set"):
            vals = set(bundle.vocabulary.sets[arg]) if op == "not_in_set" else set(arg)
            out = out - vals if out is not None else out
        elif op == "exists":
            out = (out - {None} if arg else {None}) if out is not None else out
        else:
            numeric = True
            n = bundle.settings.params[arg["param"]] if isinstance(arg, dict) else arg
            if op == "gt":
                lo = max(lo, n + 1)
            elif op == "gte":
                lo = max(lo, n)
            elif op == "lt":
                hi = min(hi, n - 1)
            elif op == "lte":
                hi = min(hi, n)
    return ("range", lo, hi) if numeric else (out if out is not None else _ANY)


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        if k not in out or out[k] is _ANY:
            out[k] = v
        elif v is _ANY:
            continue
        elif isinstance(v, tuple) and isinstance(out[k], tuple):
            out[k] = ("range", max(v[1], out[k][1]), min(v[2], out[k][2]))
        else:
            out[k] = set(out[k]) & set(v)
    return out


def _contradiction(bundle: Bundle, when: dict[str, Any]) -> str | None:
    """None when some input can satisfy ``when``; else which conditions contradict each other."""
    problems = [_branch_problem(bundle, b) for b in _allowed(bundle, when)]
    if not problems or any(p is None for p in problems):
        return None
    conditions = _conditions(when)

    def said(fact: str) -> str:
        return " and ".join(f"`{fact}: {c}`" for c in conditions.get(fact, [])) or f"`{fact}`"

    out: list[str] = []
    for kind, facts in problems:  # type: ignore[misc]
        if kind == "empty":
            text = f"no value satisfies {said(facts[0])}"
        else:
            text = f"{said(facts[0])} contradicts {said(facts[1])}"
        if text not in out:
            out.append(text)
    alternatives = " (in every alternative of `any`)" if len(problems) > 1 else ""
    return "; ".join(out) + alternatives


def _conditions(when: dict[str, Any], out: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """Each fact's conditions in ``when`` (nested `any`/`all` too), as written in YAML flow style."""
    out = {} if out is None else out
    for key, m in when.items():
        if key in ("any", "all"):
            for sub in m:
                _conditions(sub, out)
        else:
            out.setdefault(key, []).append(_flow(m))
    return out


def _flow(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _branch_problem(bundle: Bundle, branch: dict[str, Any]) -> tuple[str, tuple[str, ...]] | None:
    """None when one input can satisfy this conjunction; else ("empty", (fact,)) when one fact's
    conditions leave no value, or ("conflict", (fact, other)) when two facts exclude each other."""
    for fact, value in branch.items():
        if isinstance(value, tuple) and value[1] > value[2]:
            return ("empty", (fact,))
        if isinstance(value, set) and not value:
            return ("empty", (fact,))
    statuses = branch.get("status")
    if isinstance(statuses, set):
        real = {s for s in statuses if s}
        aliases = bundle.vocabulary.aliases
        derived = {
            "status_high": {aliases.get(s, s).split(".")[0] for s in real},
            "status_low": {aliases.get(s, s).split(".")[2] for s in real},
            "method": {s.split(".")[1] for s in real},
        }
        for fact, values in derived.items():
            allowed = branch.get(fact)
            if isinstance(allowed, set) and None not in statuses and not (allowed & values):
                return ("conflict", ("status", fact))
    source = branch.get("status_source")
    if isinstance(source, set) and source == {"top"}:
        for fact in ("status", "status_received", "status_high", "status_low"):
            allowed = branch.get(fact)
            if isinstance(allowed, set) and None not in allowed:
                return ("conflict", ("status_source", fact))
    present = branch.get("appointment_present")
    if isinstance(present, set) and present == {False}:
        for fact in ("appointment_status", "appointment_provider"):
            allowed = branch.get(fact)
            if isinstance(allowed, set) and None not in allowed:
                return ("conflict", ("appointment_present", fact))
        if branch.get("appointment_has_start") == {True}:
            return ("conflict", ("appointment_present", "appointment_has_start"))
        if isinstance(branch.get("appointment_notice_seconds"), tuple):
            return ("conflict", ("appointment_present", "appointment_notice_seconds"))
    return None


# --- coverage ------------------------------------------------------------------


def coverage_errors(bundle: Bundle, decider: Decider) -> list[PolicyError]:
    """Every known status of every method, and every top status alone, must reach a decisive rule.

    Run through the real engine with facts as the snapshot layer would derive them
    (no appointment, and each appointment status with the first provider).
    """
    v = bundle.vocabulary
    errors: list[PolicyError] = []
    appointments: list[dict[str, Any]] = [{"appointment_present": False}]
    for status in v.appointment_statuses:
        appointments.append(
            {
                "appointment_present": True,
                "appointment_status": status,
                "appointment_provider": v.appointment_providers[0],
            }
        )
    for action, policy in sorted(decider.compiled.items()):
        for method, statuses in sorted(v.methods.items()):
            known = sorted(statuses | {a for a, t in v.aliases.items() if t in statuses})
            samples = [("status", s, _status_facts(bundle, method, s)) for s in known]
            samples += [("top status", t, _top_facts(method, t)) for t in v.top_statuses]
            for kind, name, base in samples:
                for appt in appointments:
                    facts = {
                        "ship_day": "later",
                        "appointment_has_start": False,
                        "appointment_notice_seconds": 0,
                        **base,
                        **appt,
                    }
                    matched = decider.match(action, facts)
                    if not any(policy.rules[r].effect in ("allow", "deny", "invalid") for r in matched):
                        where = (
                            f"with appointment `{appt.get('appointment_status')}`"
                            if appt["appointment_present"]
                            else "without appointment"
                        )
                        errors.append(
                            ValidationError(
                                f"{kind} `{name}` of method `{method}` {where} falls through to the default of `{action}`",
                                code="validation_coverage",
                                location=bundle.policies[action].location,
                            )
                        )
                        break
    return errors


def _status_facts(bundle: Bundle, method: str, received: str) -> dict[str, Any]:
    canonical = bundle.vocabulary.aliases.get(received, received)
    high, _, low = canonical.split(".")
    return {
        "method": method,
        "method_known": True,
        "status": canonical,
        "status_received": received,
        "status_high": high,
        "status_low": low,
        "status_source": "events",
        "status_known": True,
        "top_status": None,
        "top_status_conflict": False,
    }


def _top_facts(method: str, top: str) -> dict[str, Any]:
    return {
        "method": method,
        "method_known": True,
        "status": None,
        "status_received": None,
        "status_high": None,
        "status_low": None,
        "status_source": "top",
        "status_known": False,
        "top_status": top,
        "top_status_conflict": False,
    }
