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
from typing import Any, NamedTuple

from server.bundle import Bundle
from server.compile import CompiledPolicy, CompiledRule, compile_bundle
from server.engine import Engine
from server.engine import settings as engine_settings
from server.errors import NoBundleError, SnapshotError
from server.facts import Facts, derive
from server.model import ALLOW, DENY, BundleRef, Decision, FollowUp, Reason, Snapshot

__all__ = ["DEFAULT_RULE_ID", "Decider", "RetiredError", "template_names"]

DEFAULT_RULE_ID = "default"
_FORMATTER = string.Formatter()
# Callbacks given every decision made in this process (server.testing.capture_decisions);
# a tuple replaced as a whole, so deciding reads it without a lock.
observers: tuple[Callable[[Decision], None], ...] = ()


class _DecisionIds:
    """Random 96-bit decision ids in hex, read from the OS 512 at a time (one system call
    per 512 decisions instead of one each). A forked worker starts a block of its own, so
    two processes never hand out the same ids."""

    _BLOCK = 512

    def __init__(self) -> None:
        self._reset()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        # Also after a fork: a lock held by another thread at fork stays held in the child.
        self._lock = threading.Lock()
        self._hex = ""
        self._at = 0

    def __call__(self) -> str:
        with self._lock:
            at = self._at
            if at >= len(self._hex):
                self._hex = os.urandom(12 * self._BLOCK).hex()
                at = 0
            self._at = at + 24
            return self._hex[at : at + 24]


_decision_id = _DecisionIds()


def _priority(rule: CompiledRule) -> int:
    return rule.priority


class RetiredError(NoBundleError):
    """The decider was retired between lookup and use; look up the active one again."""

    code = "bundle_retired"


class Decider:
    """One loaded bundle revision: its compiled rulesets in the engine, ready to decide.

    Thread-safe. ``close()`` deletes the rulesets; call it once no request uses it.
    """

    def __init__(
        self, bundle: Bundle, compiled: Mapping[str, CompiledPolicy] | None = None, *, memo_size: int | None = None
    ) -> None:
        self.bundle = bundle
        self.ref = BundleRef(bundle.name, bundle.revision, bundle.digest)
        self.compiled = dict(compiled) if compiled is not None else compile_bundle(bundle)
        self._engines: dict[str, Engine] = {}
        try:
            for action, policy in self.compiled.items():
                self._engines[action] = Engine(
                    f"{bundle.name}.{action}",
                    policy.ruleset,
                    policy.fact_names,
                    memo_size=engine_settings.memo_size if memo_size is None else memo_size,
                )
        except Exception:
            self.close()
            raise
        # In-flight accounting: a retired decider is closed by the last request
        # that uses it, never under one (INVARIANT: no request sees a freed ruleset).
        self._use_lock = threading.Lock()
        self._inflight = 0
        self._retired = False
        # Combining plans by (action, matched rules): bounded like the engine's memo.
        self._plans: dict[tuple[str, ...], _Plan] = {}
        self._plan_limit = max(1, engine_settings.memo_size if memo_size is None else memo_size)
        self._template_params = {k: str(v) for k, v in ((bundle.raw_settings or {}).get("params") or {}).items()}

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
        return derive(snapshot, self.bundle.vocabulary, self.bundle.settings, clock_now or dt.datetime.now(dt.UTC))

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
        key = (facts.action, *matched)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plan(facts.action, matched)
            plans = self._plans
            if len(plans) >= self._plan_limit:
                try:
                    del plans[next(iter(plans))]  # bounded: forget the oldest
                except (KeyError, RuntimeError, StopIteration):  # another thread evicted it first
                    pass
            plans[key] = plan
        if plan.error is not None:
            raise SnapshotError(*plan.error)
        reasons = plan.fixed_reasons
        follow_ups = plan.fixed_follow_ups
        if reasons is None or follow_ups is None:
            variables = _Variables(facts, self._template_params)
            if reasons is None:
                reasons = tuple([part.reason(variables) for part in plan.reasons])
            if follow_ups is None:
                follow_ups = tuple([part.follow_up(variables) for part in plan.follow_ups])
        return Decision(
            outcome=plan.outcome,
            reasons=reasons,
            follow_ups=follow_ups,
            bundle=self.ref,
            now=facts.now,
            action=facts.action,
            order_id=facts.order_id,
            decision_id=_decision_id(),
            facts=facts.values,
            matched_rules=tuple(matched),
        )

    def _plan(self, action: str, matched: list[str]) -> _Plan:
        """What a set of matched rules answers, up to the template variables (cached per set)."""
        policy = self.compiled[action]
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
            return _Plan.of(DENY, (), (), (invalid.error_field, invalid.error_message))
        on = "deny" if "deny" in effects or not decisive else "allow"
        producing = [r for r in decisive if r.effect == on]
        messages = self.bundle.reasons
        reasons: list[_Part] = []
        seen: set[str] = set()
        for rule in producing:
            for code in rule.reasons:
                if code not in seen:
                    seen.add(code)
                    reasons.append(_Part(code, rule.id, messages[code].message))
        if not producing:
            code = policy.default_reason
            reasons.append(_Part(code, DEFAULT_RULE_ID, messages[code].message))
        # Follow-ups in priority order: the producing rules' and the advice for this outcome.
        giving = [r for r in producing if r.follow_ups]
        giving += [r for r in advice if r.on == on or r.on == "any"]
        giving.sort(key=_priority)
        follow_ups: list[_Part] = []
        seen.clear()
        for rule in giving:
            for code in rule.follow_ups:
                if code not in seen:
                    seen.add(code)
                    entry = self.bundle.follow_ups[code]
                    follow_ups.append(_Part(code, rule.id, entry.message, entry.http_method, entry.path))
        return _Plan.of(DENY if on == "deny" else ALLOW, tuple(reasons), tuple(follow_ups), None)


class _Plan(NamedTuple):
    """The answer to one set of matched rules, up to the template variables."""

    outcome: str
    reasons: tuple[_Part, ...]
    follow_ups: tuple[_Part, ...]
    error: tuple[str, str] | None  # (field, message) when an `invalid` rule decides
    # The parts as given when none has a template (the same objects for every decision).
    fixed_reasons: tuple[Reason, ...] | None
    fixed_follow_ups: tuple[FollowUp, ...] | None

    @classmethod
    def of(
        cls,
        outcome: str,
        reasons: tuple[_Part, ...],
        follow_ups: tuple[_Part, ...],
        error: tuple[str, str] | None,
    ) -> _Plan:
        fixed_reasons = [p.fixed_reason for p in reasons]
        fixed_follow_ups = [p.fixed_follow_up for p in follow_ups]
        return cls(
            outcome,
            reasons,
            follow_ups,
            error,
            None if None in fixed_reasons else tuple(fixed_reasons),  # type: ignore[arg-type]
            None if None in fixed_follow_ups else tuple(fixed_follow_ups),  # type: ignore[arg-type]
        )


class _Part:
    """One reason or follow-up of a plan: its code, rule and templates.

    A part whose templates have no placeholders is built once, with the plan; the
    others are filled per decision (``str.format_map`` on the names they use).
    """

    __slots__ = ("code", "fixed_follow_up", "fixed_reason", "http_method", "message", "path", "rule_id")

    def __init__(self, code: str, rule_id: str, message: str, http_method: str = "", path: str = "") -> None:
        self.code = code
        self.rule_id = rule_id
        self.message = message
        self.http_method = http_method
        self.path = path
        fixed = not template_names(message) and not template_names(path)
        self.fixed_reason = Reason(code, message, rule_id) if fixed else None
        self.fixed_follow_up = FollowUp(code, message, rule_id, http_method, path) if fixed else None

    def reason(self, variables: _Variables) -> Reason:
        return self.fixed_reason or Reason(self.code, self.message.format_map(variables), self.rule_id)

    def follow_up(self, variables: _Variables) -> FollowUp:
        return self.fixed_follow_up or FollowUp(
            code=self.code,
            message=self.message.format_map(variables),
            rule_id=self.rule_id,
            http_method=self.http_method,
            path=self.path.format_map(variables) if self.path else "",
        )


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
