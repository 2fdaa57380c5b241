"""The only module that talks to durable_rules: one adapter around its C engine.

durable_rules 2.0.28 is a 2020 C engine with sharp edges (docs/engine.md). This
adapter calls the C module ``durable_rules_engine`` directly and defends against
each measured pitfall; every defence is an ``INVARIANT (pitfall N)`` below, N being
the pitfall's number in ``docs/engine.md``, which names the test in
``tests/test_engine.py`` that fails without it.

The compiled ruleset (a plain dict, see ``server.compile``) is serialised here
and never mutated. :meth:`Engine.match` takes strict-typed facts and returns the
names of the rules that fired, de-duplicated, in priority order.
"""

from __future__ import annotations

import bisect
import itertools
import json
import operator
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import orjson as _orjson

from server.errors import CompileError, EvalError

__all__ = [
    "CATCH_ALL",
    "DEFAULT_MEMO_SIZE",
    "INPUT_MARKER",
    "MAX_RULES",
    "Engine",
    "EngineUnavailableError",
    "settings",
    "thresholds",
]

#: How durable-rules 2.0.28 is built for Python 3.13 and later, whose C API no longer has
#: ``PyEval_CallObject``; the engine calls it only from the store/queue callbacks, which
#: this adapter never registers (so the shim is never reached).
PY313_BUILD_FIX = "CPPFLAGS=-DPyEval_CallObject=PyObject_CallObject"


class EngineUnavailableError(ImportError):
    """durable_rules' C module cannot be loaded; the message says how to fix the install.

    The command line prints it as one line at start-up instead of a traceback.
    """

    code = "engine_unavailable"


def _unavailable(exc: ImportError) -> EngineUnavailableError:
    detail = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    if isinstance(exc, ModuleNotFoundError) and exc.name == "durable_rules_engine":
        fix = "install it with `pip install durable-rules==2.0.28` (it compiles: gcc and the Python headers are needed)"
    elif "PyEval_CallObject" in detail:
        fix = (
            f"on Python 3.13 and later it must be built with {PY313_BUILD_FIX}: rebuild it with "
            f"`{PY313_BUILD_FIX} pip install --force-reinstall --no-cache-dir --no-deps durable-rules==2.0.28`"
        )
    else:
        fix = "reinstall it with `pip install --force-reinstall --no-cache-dir --no-deps durable-rules==2.0.28`"
    return EngineUnavailableError(f"the durable_rules engine cannot be loaded (`{detail}`): {fix}")


try:
    import durable_rules_engine as _dre
except ImportError as _exc:
    raise _unavailable(_exc) from _exc

#: Distinct situations remembered per ruleset (``serve --decision-memo-size``).
DEFAULT_MEMO_SIZE = 4096
_ORDERING = frozenset(("$gt", "$gte", "$lt", "$lte"))


class _Settings:
    """Process-wide engine settings, set once at start-up (``serve --decision-memo-size``)."""

    memo_size: int = DEFAULT_MEMO_SIZE


settings = _Settings()

#: INVARIANT (pitfall 4): a catch-all rule with the lowest priority fires for every
#: input, so no input ever matches nothing (``delete_state`` after an unmatched
#: input frees uninitialised pointers and segfaults). It is dropped from results.
CATCH_ALL = "__catch_all"
#: INVARIANT (pitfall 5): every input carries this marker and every rule requires
#: it, so the engine's own state record (also a fact of the session) never matches.
INPUT_MARKER = "_in"
#: INVARIANT (pitfall 11): 513+ rules branching from one test hang create_ruleset
#: forever while holding the GIL; the validator refuses more than this per ruleset.
MAX_RULES = 500
#: INVARIANT (pitfall 12): a process holds at most 131,071 rulesets.
MAX_RULESETS = 131_000

#: INVARIANT (pitfall 8): values reach the engine only as str, bool or int, never
#: float, NaN or nested objects (the engine compares loosely); absent is "".
_STRICT = frozenset((str, bool, int, type(None)))
_NAME_OK = re.compile(r"^[a-z][a-z0-9_]*$").match
_RESERVED = frozenset(("id", "sid", INPUT_MARKER))  # fields of the engine's own
_SID = itertools.count(1)  # process-wide: sids are looked up by a 32-bit hash
_NAMES = itertools.count(1)
_ruleset_count = 0
_ruleset_lock = threading.Lock()


class Engine:
    """One durable_rules ruleset, created once per bundle revision and action.

    INVARIANT (pitfall 1): the stock ``durable.engine.Host`` is never used; its timer
    threads race with request threads. Nothing here starts a thread.
    INVARIANT (pitfall 13): every call into the C engine holds ``self._lock``; the
    engine never releases the GIL, so parallelism comes from worker processes.
    """

    def __init__(
        self, name: str, ruleset: Mapping[str, Any], fact_names: Iterable[str], *, memo_size: int = DEFAULT_MEMO_SIZE
    ) -> None:
        global _ruleset_count
        rules = {k: v for k, v in ruleset.items()}
        if len(rules) > MAX_RULES:
            raise CompileError(
                f"ruleset `{name}` has {len(rules)} rules; at most {MAX_RULES} are allowed",
                code="compile_too_many_rules",
            )
        if CATCH_ALL in rules:
            raise CompileError(f"rule name `{CATCH_ALL}` is reserved", code="compile_reserved_name")
        self._fact_names = tuple(sorted(set(fact_names)))
        # The engine parses every input's JSON text and echoes it once per fired
        # rule: short field names ("a", "b", ...) inside the engine make that
        # cheaper. The mapping is private to this adapter.
        names = (_short_name(i) for i in itertools.count())
        self._short = tuple(itertools.islice((n for n in names if n not in _RESERVED), len(self._fact_names)))
        mapping = dict(zip(self._fact_names, self._short, strict=False))
        for rule_name, rule in list(rules.items()):
            rules[rule_name] = _guarded(rule_name, rule, mapping)
        rules[CATCH_ALL] = {"pri": 65535, "all": [{"m": {INPUT_MARKER: 1}}]}
        # INVARIANT (pitfalls 10, 14): the engine gets a JSON string of a copy; the
        # caller's dict is never handed over (registering mutates what it is given).
        text = json.dumps(rules, ensure_ascii=False, sort_keys=True)
        with _ruleset_lock:
            if _ruleset_count >= MAX_RULESETS:
                raise CompileError("too many rulesets in this process", code="compile_too_many_rulesets")
            # Ruleset names must be unique within the process.
            self.name = f"{name}#{next(_NAMES)}"
            try:
                self._handle: int | None = _dre.create_ruleset(self.name, text)
            except Exception as exc:  # the engine reports errors as bare numbers
                raise CompileError(
                    f"the rules engine refused ruleset `{name}`: {exc}", code="compile_engine_error"
                ) from None
            _ruleset_count += 1
        self._lock = threading.Lock()
        self._get_all = _tuple_getter(self._fact_names)
        # The memo: rules compare facts with constants only, so two inputs that agree on
        # every fact, numeric facts compared only by the interval between the ruleset's
        # constants they fall in, fire the same rules. The engine decides each distinct
        # situation once per ruleset; a new revision has new engines, hence a new memo.
        points = thresholds(ruleset)
        self._intervals = tuple((i, points[n]) for i, n in enumerate(self._fact_names) if n in points)
        self._memo: dict[Any, tuple[str, ...]] = {}
        self._memo_size = max(0, int(memo_size))
        self.memo_hits = 0
        self.memo_misses = 0

    @property
    def fact_names(self) -> tuple[str, ...]:
        """The facts the ruleset tests (only these are sent to the engine)."""
        return self._fact_names

    def _values(self, facts: Mapping[str, Any]) -> tuple[Any, ...]:
        """The values of the tested facts, in order; strict scalar types only."""
        try:
            values: tuple[Any, ...] = self._get_all(facts)  # one C call when every fact is there
        except KeyError:
            values = tuple(facts.get(name) for name in self._fact_names)
        if not _STRICT.issuperset(map(type, values)):
            bad = next(n for n, v in zip(self._fact_names, values, strict=False) if type(v) not in _STRICT)
            raise EvalError(f"fact `{bad}` has unsupported type {type(facts.get(bad)).__name__}")
        return values

    def _text(self, values: tuple[Any, ...], sid: str) -> str:
        msg = {k: ("" if v is None else v) for k, v in zip(self._short, values, strict=False)}
        msg[INPUT_MARKER] = 1
        msg["sid"] = sid
        msg["id"] = "q"
        # orjson writes UTF-8 without escaping (pitfall 14: no ensure_ascii escapes).
        return _orjson.dumps(msg).decode()

    def encode(self, facts: Mapping[str, Any], sid: str) -> str:
        """The JSON text asserted for ``facts``: strict scalar types only."""
        return self._text(self._values(facts), sid)

    def situation(self, values: tuple[Any, ...]) -> tuple[Any, ...]:
        """The memo key of a value vector: each numeric fact replaced by its interval.

        For the sorted constants ``c0 < c1 < ...`` a numeric fact is compared with, the
        value's class is ``2i`` strictly between ``c(i-1)`` and ``ci`` and ``2i + 1`` equal
        to ``ci``: every ``$gt``/``$gte``/``$lt``/``$lte``/equality with those constants
        answers the same within a class. The types are part of the key (``True == 1``).
        """
        if self._intervals:
            vals = list(values)
            for pos, points in self._intervals:
                v = vals[pos]
                if type(v) is int:
                    i = bisect.bisect_left(points, v)
                    vals[pos] = 2 * i + 1 if i < len(points) and points[i] == v else 2 * i
            values = tuple(vals)
        return (tuple(map(type, values)), values)

    def match(self, facts: Mapping[str, Any]) -> list[str]:
        """The rules whose conditions hold for ``facts``, in priority order, each once."""
        values = self._values(facts)
        if not self._memo_size:
            return list(self._match(values))
        key = self.situation(values)
        fired = self._memo.get(key)
        if fired is not None:
            self.memo_hits += 1
            return list(fired)
        fired = self._match(values)
        with self._lock:
            self.memo_misses += 1
            memo = self._memo
            if len(memo) >= self._memo_size:
                # Bounded: forget the oldest situation (insertion order).
                del memo[next(iter(memo))]
            memo[key] = fired
        return list(fired)

    def match_uncached(self, facts: Mapping[str, Any]) -> list[str]:
        """:meth:`match` always asking the engine (equivalence tests, benchmarks)."""
        return list(self._match(self._values(facts)))

    def _match(self, values: tuple[Any, ...]) -> tuple[str, ...]:
        # INVARIANT (pitfall 3): a fresh sid per input, and its state deleted in
        # `finally`, so live states never pile up to the 1024-per-ruleset limit.
        sid = str(next(_SID))
        text = self._text(values, sid)
        fired: list[str] = []
        with self._lock:
            handle = self._handle
            if handle is None:
                raise EvalError("the ruleset was closed")
            try:
                # INVARIANT (pitfall 2): the input is a fact, not an event: every
                # matching rule fires, not only the first.
                result = _dre.assert_fact(handle, text)
                state = result[1]
                action = _dre.start_action_for_state(handle, state)
                if action:
                    fired.append(_rule_name(action[1]))
                    while True:
                        # INVARIANT (pitfall 9): no Python runs inside the engine;
                        # results are read from the returned rule names only.
                        nxt = _dre.complete_and_start_action(handle, state)
                        if not nxt:
                            break
                        fired.append(_rule_name(nxt))
            except EvalError:
                raise
            except Exception as exc:
                raise EvalError(f"the rules engine failed: {exc}") from None
            finally:
                try:
                    _dre.delete_state(handle, sid)
                except Exception:
                    pass
        if CATCH_ALL not in fired:
            # The catch-all always fires; without it the result is incomplete.
            raise EvalError("the rules engine returned an incomplete result")
        # INVARIANT (pitfall 6): `$or` fires a rule once per true branch: de-duplicate.
        out: list[str] = []
        for name in fired:
            if name != CATCH_ALL and name not in out:
                out.append(name)
        return tuple(out)

    def close(self) -> None:
        """Delete the ruleset (pitfall 12: Python never frees it otherwise)."""
        global _ruleset_count
        with self._lock:
            if self._handle is not None:
                _dre.delete_ruleset(self._handle)
                self._handle = None
                with _ruleset_lock:
                    _ruleset_count -= 1

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def thresholds(ruleset: Mapping[str, Any]) -> dict[str, list[int]]:
    """Per fact compared with ``$gt``/``$gte``/``$lt``/``$lte``: every integer constant the
    ruleset compares it with (ordering or equality), sorted."""
    ordered: set[str] = set()
    constants: dict[str, set[int]] = {}

    def walk(expr: Any, op: str) -> None:
        if isinstance(expr, list):
            for e in expr:
                walk(e, op)
        elif isinstance(expr, dict):
            for key, value in expr.items():
                if key in ("$and", "$or"):
                    walk(value, "")
                elif key.startswith("$") and isinstance(value, dict):
                    walk(value, key)
                else:
                    if op in _ORDERING:
                        ordered.add(key)
                    if type(value) is int:
                        constants.setdefault(key, set()).add(value)

    for rule in ruleset.values():
        for pattern in rule.get("all", ()):
            walk(pattern.get("m"), "")
    return {name: sorted(constants.get(name, ())) for name in ordered}


def _tuple_getter(names: tuple[str, ...]) -> Any:
    """``mapping -> tuple of values`` (KeyError when one is missing), for 0, 1 or more names."""
    if not names:
        return lambda mapping: ()
    if len(names) == 1:
        name = names[0]
        return lambda mapping: (mapping[name],)
    return operator.itemgetter(*names)


def _short_name(i: int) -> str:
    """a, b, ..., z, ba, bb, ... (never the marker or the engine's own `sid`/`id`)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    out = letters[i % 26]
    while i >= 26:
        i //= 26
        out = letters[i % 26] + out
    return out


def _rename(expr: Any, mapping: Mapping[str, str]) -> Any:
    """The same condition with fact names replaced by their engine-side names."""
    if isinstance(expr, list):
        return [_rename(e, mapping) for e in expr]
    if not isinstance(expr, dict):
        return expr
    out: dict[str, Any] = {}
    for key, value in expr.items():
        if key in ("$and", "$or"):
            out[key] = _rename(value, mapping)
        elif key.startswith("$") and isinstance(value, dict):
            out[key] = {mapping.get(k, k): v for k, v in value.items()}
        else:
            out[mapping.get(key, key)] = value
    return out


def _guarded(name: str, rule: Mapping[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    """A copy of ``rule`` whose one pattern also requires the input marker."""
    if not _NAME_OK(name):
        raise CompileError(f"rule name `{name}` is not a lower_snake_case identifier", code="compile_rule_name")
    patterns = rule.get("all")
    # INVARIANT (pitfall 7): exactly one pattern per rule; two would be a join
    # over two different messages and never fire for one input.
    if not isinstance(patterns, list) or len(patterns) != 1 or set(patterns[0]) != {"m"}:
        raise CompileError(f"rule `{name}` must have exactly one pattern `m`", code="compile_rule_shape")
    pri = rule.get("pri", 1)
    if not isinstance(pri, int) or not 0 <= pri < 65535:
        raise CompileError(f"rule `{name}`: priority must be 0..65534", code="compile_rule_shape")
    return {"pri": pri, "all": [{"m": {"$and": [{INPUT_MARKER: 1}, _rename(patterns[0]["m"], mapping)]}}]}


def _rule_name(message: str) -> str:
    # The engine answers '{"<rule name>":{"m":{...}}}'. Rule names are
    # validated identifiers, so the name ends at the first closing quote.
    return message[2 : message.index('"', 2)]
