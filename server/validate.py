"""Semantic checks of a loaded bundle; every error is collected, none stops the rest.

Checks: vocabulary consistency; duplicate rule ids; rules naming a fact, value
(status, method, ...), set, param, reason or follow-up the bundle does not
define (with "did you mean"); rule shape per effect; message templates; rules
that can never match; and, with the compiled engine, coverage: every known
status of every method resolves to a decision (none falls through to the
default by accident).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from server.bundle import Bundle, Rule
from server.bundle.yamlio import line_of
from server.decide import Decider, template_names
from server.engine import MAX_RULES
from server.errors import Location, PolicyError, ValidationError, did_you_mean
from server.facts import FACTS, TEMPLATE_EXTRAS, FactSpec

__all__ = ["coverage_errors", "domain_values", "validate"]


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
            errors.append(ValidationError(
                f"policy `{policy.action}` has {len(policy.rules)} rules; at most {MAX_RULES} are allowed",
                code="validation_too_many_rules", location=policy.location,
            ))
        if policy.default_reason not in bundle.reasons:
            errors.append(_unknown("reason", policy.default_reason, bundle.reasons, policy.location))
        for rule in policy.rules:
            if rule.id in seen:
                errors.append(ValidationError(
                    f"duplicate rule id `{rule.id}` (first at {seen[rule.id]})",
                    code="validation_duplicate_rule", location=rule.location,
                ))
            else:
                seen[rule.id] = rule.location
            errors += _rule_errors(bundle, rule, policy.combining)
    return errors


def _unknown(kind: str, name: Any, known: Iterable[Any], location: Location) -> ValidationError:
    return ValidationError(
        f"unknown {kind} `{name}`", code=f"validation_unknown_{kind.replace(' ', '_')}",
        location=location, hint=did_you_mean(str(name), [str(k) for k in known]),
    )


def _vocabulary_errors(bundle: Bundle) -> list[PolicyError]:
    v = bundle.vocabulary
    file = "data/vocabulary.yaml"
    errors: list[PolicyError] = []
    for method, statuses in sorted(v.methods.items()):
        for status in sorted(statuses):
            high, smethod, _ = status.split(".")
            if smethod != method:
                errors.append(ValidationError(
                    f"status `{status}` is listed under method `{method}`", code="validation_status_method",
                    location=Location(file)))
            if high not in v.top_statuses:
                errors.append(_unknown("top status", high, v.top_statuses, Location(file)))
    known = {s for ss in v.methods.values() for s in ss}
    for alias, target in sorted(v.aliases.items()):
        if target not in known:
            errors.append(_unknown("status", target, known, Location(file)))
        if alias in known:
            errors.append(ValidationError(f"alias `{alias}` is also a listed status",
                                          code="validation_alias_conflict", location=Location(file)))
        if alias.split(".")[1] != target.split(".")[1]:
            errors.append(ValidationError(f"alias `{alias}` and `{target}` name different methods",
                                          code="validation_alias_conflict", location=Location(file)))
    return errors


def _catalogue_errors(bundle: Bundle) -> list[PolicyError]:
    allowed = set(FACTS) | set(TEMPLATE_EXTRAS) | set(bundle.settings.params)
    errors: list[PolicyError] = []
    for entry in [*bundle.reasons.values(), *bundle.follow_ups.values()]:
        for text in (entry.message, entry.path):
            try:
                names = template_names(text)
            except ValueError as exc:
                errors.append(ValidationError(f"`{entry.code}`: invalid template: {exc}",
                                              code="validation_template", location=entry.location))
                continue
            for name in names:
                if name not in allowed:
                    errors.append(ValidationError(
                        f"`{entry.code}`: unknown template variable `{name}`", code="validation_template",
                        location=entry.location, hint=did_you_mean(name, allowed)))
        if bool(entry.http_method) != bool(entry.path):
            errors.append(ValidationError(f"`{entry.code}`: `http_method` and `path` go together",
                                          code="validation_schema_error", location=entry.location))
    return errors


def _rule_errors(bundle: Bundle, rule: Rule, combining: str) -> list[PolicyError]:
    errors: list[PolicyError] = []
    loc = rule.location
    raw = rule.raw or {}
    decisive = rule.effect in ("allow", "deny")
    if decisive and not rule.reasons:
        errors.append(ValidationError(f"rule `{rule.id}`: an {rule.effect} rule needs `reasons`",
                                      code="validation_rule_shape", location=loc))
    if rule.effect == "advise":
        if not rule.follow_ups:
            errors.append(ValidationError(f"rule `{rule.id}`: an advise rule needs `follow_ups`",
                                          code="validation_rule_shape", location=loc))
        if rule.reasons:
            errors.append(ValidationError(f"rule `{rule.id}`: an advise rule gives no `reasons`",
                                          code="validation_rule_shape", location=loc))
    elif "on" in raw:
        errors.append(ValidationError(f"rule `{rule.id}`: `on` applies to advise rules only",
                                      code="validation_rule_shape", location=loc))
    if rule.effect == "invalid" and not rule.error_field:
        errors.append(ValidationError(f"rule `{rule.id}`: an invalid rule needs `error`",
                                      code="validation_rule_shape", location=loc))
    if rule.effect != "invalid" and "error" in raw:
        errors.append(ValidationError(f"rule `{rule.id}`: `error` applies to invalid rules only",
                                      code="validation_rule_shape", location=loc))
    for code in rule.reasons:
        if code not in bundle.reasons:
            errors.append(_unknown("reason", code, bundle.reasons, Location(loc.file, line_of(raw, "reasons"))))
    for code in rule.follow_ups:
        if code not in bundle.follow_ups:
            errors.append(_unknown("follow-up", code, bundle.follow_ups, Location(loc.file, line_of(raw, "follow_ups"))))
    cond_errors = _condition_errors(bundle, rule, rule.when, raw.get("when"))
    errors += cond_errors
    if not cond_errors and not _satisfiable(bundle, rule.when):
        errors.append(ValidationError(f"rule `{rule.id}` can never match", code="validation_never_matches",
                                      location=loc))
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


def _matcher_errors(bundle: Bundle, rule: Rule, fact: str, spec: FactSpec, m: Any,
                    loc: Location) -> list[PolicyError]:
    domain = domain_values(bundle, spec)
    errors: list[PolicyError] = []

    def check_values(values: Iterable[Any]) -> None:
        for value in values:
            if spec.type == "int":
                errors.append(ValidationError(f"rule `{rule.id}`: `{fact}` is a number: compare it with gt/gte/lt/lte",
                                              code="validation_type", location=loc))
                return
            if spec.type == "bool" and not isinstance(value, bool):
                errors.append(ValidationError(f"rule `{rule.id}`: `{fact}` is true or false, not `{value}`",
                                              code="validation_type", location=loc))
            elif spec.type == "string" and not isinstance(value, str):
                errors.append(ValidationError(f"rule `{rule.id}`: `{fact}` is a string, not `{value}`",
                                              code="validation_type", location=loc))
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
                errors.append(ValidationError(f"rule `{rule.id}`: `exists` applies to string facts only",
                                              code="validation_type", location=loc))
        else:
            if spec.type != "int":
                errors.append(ValidationError(f"rule `{rule.id}`: `{op}` compares numbers; `{fact}` is not one",
                                              code="validation_type", location=loc))
            if isinstance(arg, dict):
                name = arg.get("param")
                value = bundle.settings.params.get(name) if isinstance(name, str) else None
                if name not in bundle.settings.params:
                    errors.append(_unknown("param", name, bundle.settings.params, loc))
                elif not isinstance(value, int) or isinstance(value, bool):
                    errors.append(ValidationError(f"rule `{rule.id}`: param `{name}` is not a number or duration",
                                                  code="validation_type", location=loc))
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


def _satisfiable(bundle: Bundle, when: dict[str, Any]) -> bool:
    return any(_branch_ok(bundle, b) for b in _allowed(bundle, when))


def _branch_ok(bundle: Bundle, branch: dict[str, Any]) -> bool:
    for value in branch.values():
        if isinstance(value, tuple) and value[1] > value[2]:
            return False
        if isinstance(value, set) and not value:
            return False
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
                return False
    source = branch.get("status_source")
    if isinstance(source, set) and source == {"top"}:
        for fact in ("status", "status_received", "status_high", "status_low"):
            allowed = branch.get(fact)
            if isinstance(allowed, set) and None not in allowed:
                return False
    present = branch.get("appointment_present")
    if isinstance(present, set) and present == {False}:
        for fact in ("appointment_status", "appointment_provider"):
            allowed = branch.get(fact)
            if isinstance(allowed, set) and None not in allowed:
                return False
        if branch.get("appointment_has_start") == {True} or isinstance(branch.get("appointment_notice_seconds"), tuple):
            return False
    return True


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
        appointments.append({"appointment_present": True, "appointment_status": status,
                             "appointment_provider": v.appointment_providers[0]})
    for action, policy in sorted(decider.compiled.items()):
        for method, statuses in sorted(v.methods.items()):
            known = sorted(statuses | {a for a, t in v.aliases.items() if t in statuses})
            samples = [("status", s, _status_facts(bundle, method, s)) for s in known]
            samples += [("top status", t, _top_facts(method, t)) for t in v.top_statuses]
            for kind, name, base in samples:
                for appt in appointments:
                    facts = {"ship_day": "later", "appointment_has_start": False,
                             "appointment_notice_seconds": 0, **base, **appt}
                    matched = decider.match(action, facts)
                    if not any(policy.rules[r].effect in ("allow", "deny", "invalid") for r in matched):
                        where = f"with appointment `{appt.get('appointment_status')}`" if appt["appointment_present"] else "without appointment"
                        errors.append(ValidationError(
                            f"{kind} `{name}` of method `{method}` {where} falls through to the default of `{action}`",
                            code="validation_coverage", location=bundle.policies[action].location,
                        ))
                        break
    return errors


def _status_facts(bundle: Bundle, method: str, received: str) -> dict[str, Any]:
    canonical = bundle.vocabulary.aliases.get(received, received)
    high, _, low = canonical.split(".")
    return {"method": method, "method_known": True, "status": canonical, "status_received": received, "status_high": high,
            "status_low": low, "status_source": "events", "status_known": True, "top_status": None,
            "top_status_conflict": False}


def _top_facts(method: str, top: str) -> dict[str, Any]:
    return {"method": method, "method_known": True, "status": None, "status_received": None, "status_high": None, "status_low": None,
            "status_source": "top", "status_known": False, "top_status": top, "top_status_conflict": False}

