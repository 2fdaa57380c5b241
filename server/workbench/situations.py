"""The situations a policy distinguishes, read from its rules (not from knowledge of a bundle).

A matrix row is one action, collection method and status; what else changes the
decision depends on what the policy's rules test:

* the appointment: none, or one per class of appointment statuses the rules
  tell apart (statuses that every condition treats alike form one class), with
  one notice band per threshold the rules compare ``appointment_notice_seconds``
  with (at or below / above), and one provider class per provider a rule names;
* the estimated ship day, when a rule tests ``ship_day``.

Each situation carries a label for people and the representative values from
which the matrix builds a synthetic snapshot.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from server.bundle import Bundle, Policy
from server.facts import FACTS

__all__ = ["Band", "Dimensions", "Option", "dimensions"]

_COMPARISONS = ("gt", "gte", "lt", "lte")


@dataclass(frozen=True)
class Option:
    """One class of values of a dimension: its label and the value a snapshot uses."""

    label: str
    value: Any


@dataclass(frozen=True)
class Band:
    """A range of appointment notice: its label and the notice (seconds) a snapshot uses.

    ``seconds`` is ``None`` for an appointment without a start time.
    """

    label: str
    seconds: int | None


@dataclass(frozen=True)
class Dimensions:
    """What one policy distinguishes besides action, method and status."""

    ship_days: tuple[Option, ...]  # value: "due" | "later" | "unknown"; one unlabelled option when untested
    appointment_statuses: tuple[Option, ...]
    bands: tuple[Band, ...]
    providers: tuple[Option, ...]  # value: provider name or None


def _tests(when: Any) -> Iterator[tuple[str, Any]]:
    """Every (fact, matcher) of a rule's condition, nested ``any``/``all`` included."""
    if not isinstance(when, dict):
        return
    for key, value in when.items():
        if key in ("any", "all"):
            for sub in value or ():
                yield from _tests(sub)
        else:
            yield key, value


def _value_set(matcher: Any, bundle: Bundle, universe: Sequence[Any]) -> tuple[frozenset[Any], str] | None:
    """The values a set-like matcher singles out, and the name of the set when it names one."""
    if not isinstance(matcher, dict):
        return frozenset([matcher]), ""
    if len(matcher) != 1:
        return None
    ((op, arg),) = matcher.items()
    if op in ("in", "not_in"):
        return frozenset(arg), ""
    if op in ("in_set", "not_in_set"):
        return frozenset(bundle.vocabulary.sets.get(arg, ())), arg
    if op == "exists":
        return frozenset(v for v in universe if v not in (None, "")), ""
    return None


#: The policy whose situations are wanted first, then policies to compare it with.
Sources = Sequence[tuple[Policy, Bundle]]


def _rule_tests(sources: Sources) -> Iterator[tuple[str, Any, Bundle]]:
    """Every (fact, matcher, bundle) of every rule of the sources."""
    for policy, bundle in sources:
        for rule in policy.rules:
            for name, matcher in _tests(rule.when):
                yield name, matcher, bundle


def _classes(universe: Sequence[Any], fact: str, sources: Sources) -> list[tuple[list[Any], str]]:
    """``universe`` split into the classes every test of ``fact`` treats alike, in universe order.

    Each class comes with the name of a vocabulary set that is exactly that class, if any.
    """
    sets: list[frozenset[Any]] = []
    names: dict[frozenset[Any], str] = {}
    for name, matcher, bundle in _rule_tests(sources):
        if name != fact:
            continue
        found = _value_set(matcher, bundle, universe)
        if found is not None:
            sets.append(found[0])
            if found[1]:
                names.setdefault(found[0] & frozenset(universe), found[1])
    groups: dict[tuple[bool, ...], list[Any]] = {}
    for value in universe:
        groups.setdefault(tuple(value in s for s in sets), []).append(value)
    return [(members, names.get(frozenset(members), "")) for members in groups.values()]


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0 and not (unit == "d" and seconds < 3 * 86400):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _cuts(sources: Sources) -> dict[int, str]:
    """Where notice comparisons split the line: cut c means ``notice < c`` vs ``notice >= c``.

    The value is the text of the bound as the rule wrote it, with ``>``/``<=`` (bound
    ``T`` gives cut ``T + 1``) or ``>=``/``<`` style marked by a leading ``=``.
    """
    cuts: dict[int, str] = {}
    for name, matcher, bundle in _rule_tests(sources):
        if name != "appointment_notice_seconds" or not isinstance(matcher, dict):
            continue
        params = (bundle.raw_settings or {}).get("params") or {}
        for op, bound in matcher.items():
            if op not in _COMPARISONS:
                continue
            if isinstance(bound, dict) and "param" in bound:
                value = bundle.settings.params.get(bound["param"])
                text = f"{bound['param']} ({params.get(bound['param'], value)})"
            else:
                value, text = bound, _duration(bound) if isinstance(bound, int) else str(bound)
            if not isinstance(value, int) or isinstance(value, bool):
                continue
            if op in ("gt", "lte"):
                cuts.setdefault(value + 1, text)
            else:
                cuts.setdefault(value, "=" + text)
    return cuts


def _bands(sources: Sources) -> tuple[Band, ...]:
    cuts = _cuts(sources)
    tested = {name for name, _, _ in _rule_tests(sources)}
    if not cuts:
        if "appointment_has_start" in tested:
            return (Band("with a start time", 0), Band("no start time", None))
        return (Band("", None),)

    def below(cut: int) -> str:
        text = cuts[cut]
        return f"< {text[1:]}" if text.startswith("=") else f"<= {text}"

    def above(cut: int) -> str:
        text = cuts[cut]
        return f">= {text[1:]}" if text.startswith("=") else f"> {text}"

    ordered = sorted(cuts)
    # Each band's snapshot sits on its boundary: exactly at a threshold or one second past it.
    bands = [Band(f"notice {below(ordered[0])}", ordered[0] - 1)]
    for low, high in zip(ordered, ordered[1:], strict=False):
        bands.append(Band(f"notice {above(low)} and {below(high)}", low))
    bands.append(Band(f"notice {above(ordered[-1])}", ordered[-1]))
    bands.append(Band("no start time", None))
    return tuple(bands)


def _status_label(members: list[Any], set_name: str) -> str:
    return set_name or "/".join(members)


def _provider_options(bundle: Bundle, sources: Sources) -> tuple[Option, ...]:
    universe: list[Any] = [*bundle.vocabulary.appointment_providers, None]
    classes = _classes(universe, "appointment_provider", sources)
    if len(classes) == 1:
        return (Option("", None),)
    out = []
    for members, set_name in classes:
        named = [m for m in members if m is not None]
        if None in members:
            label = "other provider" if named else "no provider"
        else:
            label = f"provider {_status_label(named, set_name)}"
        out.append(Option(label, named[0] if named else None))
    return tuple(out)


def dimensions(policy: Policy, bundle: Bundle, others: Sources = ()) -> Dimensions:
    """The situations ``policy`` distinguishes, derived from its rules and the vocabulary.

    With ``others`` (the same action's policy in other bundles), the situations any
    of them distinguishes: two matrices built so have the same situations, and a
    moved threshold shows as the cells between the old and the new value.
    """
    sources: Sources = [(policy, bundle), *others]
    tested = {name for name, _, _ in _rule_tests(sources)}
    if "ship_day" in tested:
        days = _classes(list(FACTS["ship_day"].values), "ship_day", sources)
        ship = tuple(Option(f"ship day {_status_label(m, n)}", m[0]) for m, n in days)
    else:
        ship = (Option("", "unknown"),)
    statuses = _classes(list(bundle.vocabulary.appointment_statuses), "appointment_status", sources)
    if len(statuses) == 1:
        appointment: tuple[Option, ...] = (Option("", statuses[0][0][0]),)
    else:
        appointment = tuple(Option(_status_label(m, n), m[0]) for m, n in statuses)
    return Dimensions(ship, appointment, _bands(sources), _provider_options(bundle, sources))
