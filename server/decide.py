"""Deciding: facts -> engine -> combining -> a :class:`Decision`.

The engine says which rules hold; this module only combines their declared
effects (no hand-written decision logic):

* ``deny_overrides``: DENY when any deny rule holds, else ALLOW when any allow
  rule holds, else the policy's default (DENY with its own reason).
* ``first_match``: the first decisive rule in file order decides.
* an ``invalid`` rule that decides turns the snapshot into an error naming the
  rule's field: an error is never a decision.

The reasons are those of the rules that produced the outcome (a DENY does not
list allow reasons); follow-ups come from those rules and from ``advise``
rules whose ``on`` is the outcome or ``any``. Codes appear once each.
"""

from __future__ import annotations

import datetime as dt
import os
import string
import threading
from collections.abc import Callable, Mapping
from typing import Any

from server.bundle import Bundle
from server.compile import CompiledPolicy, CompiledRule, compile_bundle
from server.engine import Engine
from server.errors import NoBundleError, SnapshotError
from server.facts import Facts, derive
from server.model import ALLOW, DENY, BundleRef, Decision, FollowUp, Reason, Snapshot

__all__ = ["DEFAULT_RULE_ID", "Decider", "RetiredError", "template_names"]

DEFAULT_RULE_ID = "default"
_FORMATTER = string.Formatter()
# Callbacks given every decision made in this process (server.testing.capture_decisions);
# a tuple replaced as a whole, so deciding reads it without a lock.
observers: tuple[Callable[[Decision], None], ...] = ()


def _priority(rule: CompiledRule) -> int:
    return rule.priority


class RetiredError(NoBundleError):
    """The decider was retired between lookup and use; look up the active one again."""

    code = "bundle_retired"


class Decider:
    """One loaded bundle revision: its compiled rulesets in the engine, ready to decide.

    Thread-safe. ``close()`` deletes the rulesets; call it once no request uses it.
    """

    def __init__(self, bundle: Bundle, compiled: Mapping[str, CompiledPolicy] | None = None) -> None:
        self.bundle = bundle
        self.ref = BundleRef(bundle.name, bundle.revision, bundle.digest)
        self.compiled = dict(compiled) if compiled is not None else compile_bundle(bundle)
        self._engines: dict[str, Engine] = {}
        try:
            for action, policy in self.compiled.items():
                self._engines[action] = Engine(f"{bundle.name}.{action}", policy.ruleset, policy.fact_names)
        except Exception:
            self.close()
            raise
        # In-flight accounting: a retired decider is closed by the last request
        # that uses it, never under one (INVARIANT: no request sees a freed ruleset).
        self._use_lock = threading.Lock()
        self._inflight = 0
        self._retired = False
        self._template_params = {
            k: str(v) for k, v in ((bundle.raw_settings or {}).get("params") or {}).items()
        }

    def close(self) -> None:
        """Free the engine's rulesets now (callers ensure no request uses them)."""
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()

    def close_when_unused(self) -> None:
        """Retire: close now if idle, else when the last in-flight decision ends."""
        with self._use_lock:
            self._retired = True
            idle = self._inflight == 0
        if idle:
            self.close()

    def facts(self, snapshot: Snapshot, clock_now: dt.datetime | None = None) -> Facts:
        """The derived facts of a snapshot (raises SnapshotError)."""
        return derive(snapshot, self.bundle.vocabulary, self.bundle.settings,
                      clock_now or dt.datetime.now(dt.UTC))

    def match(self, action: str, values: Mapping[str, Any]) -> list[str]:
        """The ids of the rules of ``action`` that hold for ``values``, in priority order."""
        engine = self._engines.get(action)
        if engine is None:
            raise SnapshotError("action", f"the bundle has no policy for action `{action}`")
        return engine.match(values)

    def decide(self, snapshot: Snapshot, *, clock_now: dt.datetime | None = None) -> Decision:
        """Decide one snapshot. Raises SnapshotError (invalid input) or EvalError.

        The explanation (facts, matched rules) is always part of the Decision;
        callers choose whether to show it.
        """
        facts = self.facts(snapshot, clock_now)
        with self._use_lock:
            if self._retired:
                raise RetiredError("this bundle revision was retired")
            self._inflight += 1
        try:
            matched = self.match(facts.action, facts.values)
        finally:
            with self._use_lock:
                self._inflight -= 1
                close = self._retired and self._inflight == 0
            if close:
                self.close()
        decision = self.combine(facts, matched)
        for observe in observers:
            observe(decision)
        return decision

    def combine(self, facts: Facts, matched: list[str]) -> Decision:
        """Apply the combining algorithm to the rules that held (in priority order)."""
        policy = self.compiled[facts.action]
        index = policy.rules
        decisive: list[CompiledRule] = []
        advice: list[CompiledRule] = []
        for name in matched:
            rule = index[name]
            (advice if rule.effect == "advise" else decisive).append(rule)
        if decisive and policy.combining == "first_match":
            decisive = decisive[:1]
        effects = {rule.effect for rule in decisive}
        if "invalid" in effects:
            invalid = next(r for r in decisive if r.effect == "invalid")
            raise SnapshotError(invalid.error_field, invalid.error_message)
        on = "deny" if "deny" in effects or not decisive else "allow"
        outcome = DENY if on == "deny" else ALLOW
        variables = self._variables(facts)
        producing = [r for r in decisive if r.effect == on]
        messages = self.bundle.reasons
        reasons: list[Reason] = []
        if producing:
            seen: set[str] = set()
            for rule in producing:
                for code in rule.reasons:
                    if code not in seen:
                        seen.add(code)
                        reasons.append(Reason(code, messages[code].message.format_map(variables), rule.id))
        else:
            code = policy.default_reason
            reasons.append(Reason(code, messages[code].message.format_map(variables), DEFAULT_RULE_ID))
        # Follow-ups in priority order: the producing rules' and the advice for this outcome.
        giving = [r for r in producing if r.follow_ups]
        giving += [r for r in advice if r.on == on or r.on == "any"]
        if len(giving) > 1:
            giving.sort(key=_priority)
        return Decision(
            outcome=outcome,
            reasons=tuple(reasons),
            follow_ups=self._follow_ups(giving, variables) if giving else (),
            bundle=self.ref,
            now=facts.now,
            action=facts.action,
            order_id=facts.order_id,
            decision_id=os.urandom(12).hex(),
            facts=facts.values,
            matched_rules=tuple(matched),
        )

    def _follow_ups(self, rules: list[CompiledRule], variables: _Variables) -> tuple[FollowUp, ...]:
        out: list[FollowUp] = []
        seen: set[str] = set()
        for rule in rules:
            for code in rule.follow_ups:
                if code in seen:
                    continue
                seen.add(code)
                entry = self.bundle.follow_ups[code]
                out.append(FollowUp(
                    code=code,
                    message=entry.message.format_map(variables),
                    rule_id=rule.id,
                    http_method=entry.http_method,
                    path=entry.path.format_map(variables) if entry.path else "",
                ))
        return tuple(out)

    def _variables(self, facts: Facts) -> _Variables:
        return _Variables(facts, self._template_params)


class _Variables(dict):  # type: ignore[type-arg]
    """Template variables for ``str.format_map``, looked up only when a template names
    them (hot path). Names are checked when the bundle is validated."""

    __slots__ = ("_facts", "_params")

    def __init__(self, facts: Facts, params: Mapping[str, str]) -> None:
        super().__init__()
        self._facts = facts
        self._params = params

    def __missing__(self, name: str) -> Any:
        values = self._facts.values
        if name == "order_id":
            return self._facts.order_id
        if name == "current_status":
            return values.get("status_received") or values.get("top_status") or ""
        if name in values:
            value = values[name]
            return "" if value is None else value
        return self._params[name]


def template_names(template: str) -> list[str]:
    """The placeholder names of a template (for validation)."""
    return [name for _, name, _, _ in _FORMATTER.parse(template) if name is not None]

