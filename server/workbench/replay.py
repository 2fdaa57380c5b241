"""The impact of a bundle change on recorded traffic: every request decided by both bundles.

Each request is decided by the old and the new decider at its own ``now`` (one
common instant for requests without one), through ``Decider.decide``; when both
bundles have the same vocabulary and settings (a change of rules, messages or
params), the facts are derived once and each decider matches and combines them,
the remaining steps of ``Decider.decide``. Requests
whose answers differ (outcome, reason codes or follow-up codes; an error under
one bundle and a decision under the other; errors on different fields) are
grouped by transition, with every request id of the group.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from server.decide import Decider
from server.errors import PolicyError, SnapshotError
from server.facts import Facts
from server.model import BundleRef, Decision
from server.workbench.inputs import InputError, InputRecord
from server.workbench.matrix import ref_json

__all__ = ["MAX_LISTED_ERRORS", "MAX_REQUEST_IDS", "Answer", "Impact", "ImpactGroup", "answer", "replay"]

#: Request ids kept over all groups (the counts stay exact beyond it).
MAX_REQUEST_IDS = 1_000_000
#: Input errors kept for the report (all are counted).
MAX_LISTED_ERRORS = 100

#: ("decision", outcome, reason codes, follow-up codes) or ("error", code, field).
Answer = tuple[Any, ...]


def answer(decider: Decider, record: InputRecord, now: dt.datetime) -> Answer:
    """What ``decider`` answers for a recorded request, as a comparable value."""
    try:
        d = decider.decide(record.snapshot(now))
    except SnapshotError as exc:
        return ("error", exc.code, exc.field)
    except PolicyError as exc:  # the engine failed on this input: an error, never a decision
        return ("error", exc.code, "")
    return _summary(d)


def _summary(d: Decision) -> Answer:
    return ("decision", d.outcome, tuple(r.code for r in d.reasons), tuple(f.code for f in d.follow_ups))


def _same_facts(old: Decider, new: Decider) -> bool:
    """Do both bundles derive the same facts from every snapshot?

    Facts come from the vocabulary and the shipping settings; ``params`` only reach the
    rules and messages (a test checks the shared path against ``decide`` for a changed
    param).
    """
    a, b = old.bundle, new.bundle
    return a.vocabulary == b.vocabulary and replace(a.settings, params={}) == replace(b.settings, params={})


def _answer_from_facts(decider: Decider, facts: Facts) -> Answer:
    """``Decider.decide`` after its first step: the engine matches the facts, the decider combines."""
    try:
        return _summary(decider.combine(facts, decider.match(facts.action, facts.values)))
    except SnapshotError as exc:
        return ("error", exc.code, exc.field)
    except PolicyError as exc:
        return ("error", exc.code, "")


def answers(
    old: Decider, new: Decider, record: InputRecord, now: dt.datetime, same_facts: bool
) -> tuple[Answer, Answer]:
    """Both bundles' answers; when they derive the same facts, the facts are derived once."""
    if not same_facts:
        return answer(old, record, now), answer(new, record, now)
    try:
        facts = old.facts(record.snapshot(now))
    except SnapshotError as exc:
        error = ("error", exc.code, exc.field)
        return error, error
    return _answer_from_facts(old, facts), _answer_from_facts(new, facts)


def answer_json(a: Answer) -> dict[str, Any]:
    """``{"outcome", "reasons", "follow_ups"}`` or ``{"error": code, "field": field}``."""
    if a[0] == "error":
        return {"error": a[1], "field": a[2]}
    return {"outcome": a[1], "reasons": list(a[2]), "follow_ups": list(a[3])}


@dataclass
class ImpactGroup:
    """The requests that went from one answer to another."""

    before: dict[str, Any]
    after: dict[str, Any]
    count: int = 0
    request_ids: list[str] = field(default_factory=list)


@dataclass
class Impact:
    """What a change would do to the recorded requests."""

    inputs: int = 0
    errors: int = 0
    changed: int = 0
    groups: list[ImpactGroup] = field(default_factory=list)
    input_errors: list[InputError] = field(default_factory=list)
    ids_dropped: int = 0

    def to_json(self, old_ref: BundleRef, new_ref: BundleRef) -> dict[str, Any]:
        """The JSON contract of ``order-policy diff --input``."""
        return {
            "old": ref_json(old_ref),
            "new": ref_json(new_ref),
            "inputs": self.inputs,
            "errors": self.errors,
            "changed": self.changed,
            "groups": [
                {
                    "before": g.before,
                    "after": g.after,
                    "count": g.count,
                    "share": round(g.count / self.inputs, 6) if self.inputs else 0.0,
                    "request_ids": g.request_ids,
                }
                for g in self.groups
            ],
            "input_errors": [e.to_dict() for e in self.input_errors],
            "request_ids_dropped": self.ids_dropped,
        }


def replay(
    old: Decider, new: Decider, inputs: Iterable[InputRecord | InputError], *, now: dt.datetime | None = None
) -> Impact:
    """Decide every recorded request with both deciders; group the ones that changed.

    ``now`` is the instant for requests that recorded none (default: the current time).
    Groups come largest first.
    """
    clock = now or dt.datetime.now(dt.UTC)
    same_facts = _same_facts(old, new)
    impact = Impact()
    groups: dict[tuple[Answer, Answer], ImpactGroup] = {}
    kept = 0
    for record in inputs:
        if isinstance(record, InputError):
            impact.errors += 1
            if len(impact.input_errors) < MAX_LISTED_ERRORS:
                impact.input_errors.append(record)
            continue
        impact.inputs += 1
        before, after = answers(old, new, record, clock, same_facts)
        if before == after:
            continue
        impact.changed += 1
        group = groups.get((before, after))
        if group is None:
            group = groups[(before, after)] = ImpactGroup(answer_json(before), answer_json(after))
        group.count += 1
        if kept < MAX_REQUEST_IDS:
            group.request_ids.append(record.request_id)
            kept += 1
        else:
            impact.ids_dropped += 1
    impact.groups = sorted(groups.values(), key=lambda g: -g.count)
    return impact
