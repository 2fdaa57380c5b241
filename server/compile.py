"""Compiling a validated bundle into durable_rules rulesets (pure, deterministic).

One ruleset per action. Each rule becomes ``{"pri": n, "all": [{"m": EXPR}]}``
with every condition under one ``m`` joined by ``$and`` (docs/engine.md, pitfall 7: two patterns
are a join over two messages). Only equality, ``$neq``, ``$or``, ``$and`` and the
numeric comparisons are emitted (pitfall 15: no regexes, operator first).
Named sets and params are resolved here, so the engine sees constants only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from server.bundle import Bundle, Policy, Rule
from server.engine import INPUT_MARKER
from server.errors import CompileError
from server.facts import FACTS

__all__ = ["CompiledPolicy", "CompiledRule", "compile_bundle", "compile_policy", "condition_facts"]

#: The condition of a rule with an empty `when`: true for every input.
_ALWAYS = {INPUT_MARKER: 1}
_COMPARE = {"gt": "$gt", "gte": "$gte", "lt": "$lt", "lte": "$lte"}


@dataclass(frozen=True)
class CompiledRule:
    """What the combining step needs to know about a rule that fired."""

    id: str
    effect: str
    on: str
    reasons: tuple[str, ...]
    follow_ups: tuple[str, ...]
    error_field: str
    error_message: str
    priority: int


@dataclass(frozen=True)
class CompiledPolicy:
    """The durable_rules ruleset of one action and its rule index."""

    action: str
    combining: str
    default_reason: str
    ruleset: dict[str, Any]
    rules: dict[str, CompiledRule]
    fact_names: tuple[str, ...]

    def to_json(self) -> str:
        """Deterministic text of the compiled ruleset (golden files)."""
        return (
            json.dumps(
                {
                    "action": self.action,
                    "combining": self.combining,
                    "default_reason": self.default_reason,
                    "facts": list(self.fact_names),
                    "ruleset": self.ruleset,
                },
                indent=2,
                sort_keys=True,
                ensure_ascii=False,
            )
            + "\n"
        )


def compile_bundle(bundle: Bundle) -> dict[str, CompiledPolicy]:
    """Every policy of a validated bundle, by action."""
    return {action: compile_policy(policy, bundle) for action, policy in sorted(bundle.policies.items())}


def compile_policy(policy: Policy, bundle: Bundle) -> CompiledPolicy:
    """One policy -> its ruleset. Rule order in the file is its priority (1 first)."""
    ruleset: dict[str, Any] = {}
    rules: dict[str, CompiledRule] = {}
    facts: set[str] = set()
    for index, rule in enumerate(policy.rules):
        # The engine adapter adds its input marker to every rule (pitfall 5).
        exprs = _condition(rule.when, rule, bundle, facts)
        ruleset[rule.id] = {"pri": index + 1, "all": [{"m": {"$and": exprs} if exprs else _ALWAYS}]}
        rules[rule.id] = CompiledRule(
            id=rule.id,
            effect=rule.effect,
            on=rule.on,
            reasons=rule.reasons,
            follow_ups=rule.follow_ups,
            error_field=rule.error_field,
            error_message=rule.error_message,
            priority=index + 1,
        )
    return CompiledPolicy(
        action=policy.action,
        combining=policy.combining,
        default_reason=policy.default_reason,
        ruleset=ruleset,
        rules=rules,
        fact_names=tuple(sorted(facts)),
    )


def condition_facts(when: dict[str, Any]) -> list[str]:
    """Every fact name a condition tests (nested ``any``/``all`` included)."""
    out: list[str] = []
    for key, value in when.items():
        if key in ("any", "all"):
            for sub in value:
                out.extend(condition_facts(sub))
        else:
            out.append(key)
    return out


def _and(exprs: list[Any]) -> Any:
    return exprs[0] if len(exprs) == 1 else {"$and": exprs}


def _or(exprs: list[Any]) -> Any:
    return exprs[0] if len(exprs) == 1 else {"$or": exprs}


def _condition(when: dict[str, Any], rule: Rule, bundle: Bundle, facts: set[str]) -> list[Any]:
    exprs: list[Any] = []
    for key in sorted(when, key=lambda k: (_cost(when[k]) if k not in ("any", "all") else 4, k)):
        value = when[key]
        if key == "any":
            exprs.append(_or([_and(_condition(sub, rule, bundle, facts) or [_ALWAYS]) for sub in value]))
        elif key == "all":
            for sub in value:
                exprs.extend(_condition(sub, rule, bundle, facts))
        else:
            exprs.extend(_matcher(key, value, rule, bundle, facts))
    return exprs


def _cost(m: Any) -> int:
    """Test order inside a rule: the engine stops a rule at its first false test, and rules
    with the same leading tests share them, so single equalities go first, then sets,
    then comparisons, then exclusions (one `$neq` per value), then nested `any`/`all`."""
    if not isinstance(m, dict):
        return 0
    if "in" in m or "in_set" in m or "exists" in m:
        return 1
    if "not_in" in m or "not_in_set" in m:
        return 3
    return 2


def _matcher(fact: str, m: Any, rule: Rule, bundle: Bundle, facts: set[str]) -> list[Any]:
    spec = FACTS.get(fact)
    if spec is None:
        raise CompileError(
            f"rule `{rule.id}`: unknown fact `{fact}`", code="compile_unknown_fact", location=rule.location
        )
    facts.add(fact)
    out: list[Any] = []
    if spec.guard:
        facts.add(spec.guard)
        out.append({spec.guard: True})
    if not isinstance(m, dict):
        out.append({fact: m})
        return out
    op: str
    arg: Any
    ((op, arg),) = m.items() if len(m) == 1 else (("_compare", m),)
    if op in ("in", "in_set"):
        values = bundle.vocabulary.sets[arg] if op == "in_set" else arg
        out.append(_or([{fact: v} for v in values]))
    elif op in ("not_in", "not_in_set"):
        values = bundle.vocabulary.sets[arg] if op == "not_in_set" else arg
        out.extend({"$neq": {fact: v}} for v in values)
    elif op == "exists":
        out.append({"$neq": {fact: ""}} if arg else {fact: ""})
    else:
        items = m.items() if op == "_compare" else [(op, arg)]
        for name, bound in sorted(items):
            if name not in _COMPARE:
                raise CompileError(
                    f"rule `{rule.id}`: unsupported operator `{name}`",
                    code="compile_unsupported_operator",
                    location=rule.location,
                )
            out.append({_COMPARE[name]: {fact: _number(bound, bundle)}})
    return out


def _number(bound: Any, bundle: Bundle) -> int:
    if isinstance(bound, dict):
        bound = bundle.settings.params[bound["param"]]
    if not isinstance(bound, int) or isinstance(bound, bool):
        raise CompileError(f"`{bound}` is not a whole number", code="compile_unsupported_operator")
    return bound
