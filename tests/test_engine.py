"""The durable_rules adapter: each defence against ENGINE-NOTES.md's pitfalls has a test here."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import threading

import pytest

from server.engine import CATCH_ALL, MAX_RULES, Engine
from server.errors import CompileError, EvalError
from tests.support.memory import rss_kib


def rule(m: dict, pri: int = 1) -> dict:
    return {"pri": pri, "all": [{"m": m}]}


def test_every_matching_rule_fires_for_one_input_as_a_fact():
    """Facts fire every matching rule (events would fire only the first)."""
    eng = Engine("t", {"a": rule({"x": "1"}, 1), "b": rule({"y": True}, 2), "c": rule({"x": "2"}, 3)}, ["x", "y"])
    assert eng.match({"x": "1", "y": True}) == ["a", "b"]
    eng.close()


def test_rules_come_back_in_priority_order():
    """The result lists rules by `pri`, lowest first."""
    eng = Engine("t", {"late": rule({"x": "1"}, 9), "early": rule({"x": "1"}, 2)}, ["x"])
    assert eng.match({"x": "1"}) == ["early", "late"]
    eng.close()


def test_or_with_several_true_branches_reports_the_rule_once():
    """`$or` fires once per true branch; the adapter de-duplicates."""
    eng = Engine("t", {"a": rule({"$or": [{"x": "1"}, {"y": True}]})}, ["x", "y"])
    assert eng.match({"x": "1", "y": True}) == ["a"]
    eng.close()


def test_two_thousand_distinct_unmatched_inputs_in_a_row_do_not_crash():
    """The catch-all rule keeps `delete_state` away from inputs that matched nothing (it segfaults)."""
    script = textwrap.dedent("""
        from server.engine import Engine
        eng = Engine("t", {"a": {"pri": 1, "all": [{"m": {"x": "never"}}]}}, ["x", "n"])
        for i in range(2000):
            assert eng.match({"x": "v%d" % i, "n": i}) == []
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok"


def test_more_live_states_than_the_engine_limit_never_accumulate():
    """5,000 sequential decisions on one ruleset: a fresh sid each, deleted after (limit is 1,024 live)."""
    eng = Engine("t", {"a": rule({"x": "1"})}, ["x"])
    for i in range(5000):
        assert eng.match({"x": "1" if i % 2 else "0"}) == (["a"] if i % 2 else [])
    eng.close()


def test_the_engine_state_record_never_matches_a_rule():
    """A rule that holds for a message without `x` would match the engine's own state record; the marker stops it."""
    eng = Engine("t", {"no_x": rule({"$nex": {"x": 1}})}, ["x"])
    for _ in range(50):
        assert eng.match({"x": "present"}) == []
    eng.close()


def test_a_rule_with_two_patterns_is_refused():
    """Two patterns in `all` are a join over two messages and never fire: refused at creation."""
    two = {"pri": 1, "all": [{"m": {"x": "1"}}, {"n": {"y": "1"}}]}
    with pytest.raises(CompileError) as err:
        Engine("t", {"a": two}, ["x", "y"])
    assert err.value.code == "compile_rule_shape"


def test_loose_types_never_reach_the_engine():
    """The engine compares `1 == true == "1"`; floats, dicts and lists are refused before it sees them."""
    eng = Engine("t", {"a": rule({"y": True})}, ["y"])
    for bad in (1.0, float("nan"), {"k": 1}, [1]):
        with pytest.raises(EvalError):
            eng.match({"y": bad})
    assert eng.match({"y": "true"}) == ["a"]  # why strict typing matters: the engine itself is loose
    eng.close()


def test_absent_strings_are_sent_as_empty_and_do_not_equal_any_value():
    """None becomes "" so `$neq` and equality behave (a missing field is undefined behaviour)."""
    eng = Engine("t", {"eq": rule({"x": "a"}), "neq": rule({"$neq": {"x": "a"}}, 2)}, ["x"])
    assert eng.match({"x": None}) == ["neq"]
    assert eng.match({"x": "a"}) == ["eq"]
    eng.close()


def test_every_operator_the_compiler_emits_behaves_as_documented():
    """Equality, $neq, $or, $and, $gt, $gte, $lt, $lte with negatives and large numbers."""
    rules = {
        "gt": rule({"$gt": {"n": 86400}}, 1),
        "gte": rule({"$gte": {"n": 86400}}, 2),
        "lt": rule({"$lt": {"n": -5}}, 3),
        "lte": rule({"$lte": {"n": 86400}}, 4),
        "and_or": rule({"$and": [{"$or": [{"s": "a"}, {"s": "b"}]}, {"b": False}]}, 5),
    }
    eng = Engine("t", rules, ["n", "s", "b"])
    assert eng.match({"n": 86400, "s": "a", "b": False}) == ["gte", "lte", "and_or"]
    assert eng.match({"n": 86401, "s": "c", "b": False}) == ["gt", "gte"]
    assert eng.match({"n": -6, "s": "b", "b": True}) == ["lt", "lte"]
    assert eng.match({"n": 10**12, "s": "b", "b": False}) == ["gt", "gte", "and_or"]
    assert eng.match({"n": -(10**12), "s": "x", "b": False}) == ["lt", "lte"]
    eng.close()


def test_non_ascii_values_match_unescaped():
    """Rules and inputs are sent without ASCII escapes, so non-ASCII text matches."""
    eng = Engine("t", {"a": rule({"x": "Zoë ✓"})}, ["x"])
    assert eng.match({"x": "Zoë ✓"}) == ["a"]
    eng.close()


def test_too_many_rules_are_refused_before_the_engine_hangs():
    """513+ rules branching from one test hang create_ruleset forever: refused above the cap."""
    rules = {f"r{i}": rule({"x": f"v{i}"}, 1) for i in range(MAX_RULES + 1)}
    with pytest.raises(CompileError) as err:
        Engine("t", rules, ["x"])
    assert err.value.code == "compile_too_many_rules"


def test_the_caller_ruleset_is_not_mutated():
    """Registering mutates what it is given; the adapter only hands over a serialised copy."""
    rs = {"a": rule({"x": "1"})}
    before = repr(rs)
    Engine("t", rs, ["x"]).close()
    assert repr(rs) == before
    assert CATCH_ALL not in rs


def test_a_closed_ruleset_refuses_work():
    """Using a deleted ruleset is an error, not a crash."""
    eng = Engine("t", {"a": rule({"x": "1"})}, ["x"])
    eng.close()
    with pytest.raises(EvalError):
        eng.match({"x": "1"})
    eng.close()  # idempotent


def test_eight_threads_get_every_decision_right():
    """Concurrent use from 8 threads: the per-ruleset lock keeps every result correct."""
    eng = Engine("t", {"even": rule({"p": "even"}, 1), "big": rule({"$gt": {"n": 500}}, 2)}, ["p", "n"])
    wrong: list[tuple[int, list[str]]] = []

    def work(seed: int) -> None:
        for i in range(3000):
            n = (seed * 7919 + i) % 1000
            want = (["even"] if n % 2 == 0 else []) + (["big"] if n > 500 else [])
            got = eng.match({"p": "even" if n % 2 == 0 else "odd", "n": n})
            if got != want:
                wrong.append((n, got))

    threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    eng.close()
    assert wrong == []


@pytest.mark.slow
def test_rulesets_are_freed_on_close_so_reloads_keep_memory_flat():
    """1,000 create/close cycles: RSS stays flat because close() deletes the ruleset."""
    rules = {f"r{i}": rule({"$and": [{"x": f"v{i}"}, {"$gt": {"n": i}}]}, i + 1) for i in range(40)}
    for _ in range(100):
        Engine("warm", rules, ["x", "n"]).close()
    gc.collect()
    before = rss_kib()
    for _ in range(1000):
        eng = Engine("t", rules, ["x", "n"])
        eng.match({"x": "v3", "n": 10})
        eng.close()
    gc.collect()
    grown = rss_kib() - before
    # ~450 KB per 40-rule ruleset if they leaked: 1,000 would be ~440 MB.
    assert grown < 20_000, f"RSS grew by {grown} KiB over 1,000 rulesets"


@pytest.mark.slow
def test_one_million_decisions_keep_memory_flat():
    """1,000,000 decisions through one ruleset: RSS after equals RSS after warm-up (within 5 MiB)."""
    rules = {f"r{i}": rule({"$and": [{"x": f"v{i % 7}"}, {"$gt": {"n": i}}]}, i + 1) for i in range(20)}
    eng = Engine("t", rules, ["x", "n"])
    for i in range(50_000):
        eng.match({"x": f"v{i % 9}", "n": i % 40})
    gc.collect()
    before = rss_kib()
    for i in range(1_000_000):
        eng.match({"x": f"v{i % 9}", "n": i % 40})
    gc.collect()
    grown = rss_kib() - before
    eng.close()
    assert grown < 5 * 1024, f"RSS grew by {grown} KiB over 1,000,000 decisions"


def test_one_fact_and_missing_facts_are_encoded_right():
    """A ruleset testing one fact, and inputs that lack a fact (sent as absent), still match correctly."""
    eng = Engine("t", {"a": rule({"x": "1"}), "b": rule({"$neq": {"y": "2"}}, 2)}, ["x", "y"])
    assert eng.match({"x": "1"}) == ["a", "b"]
    assert eng.match({"y": "2"}) == []
    eng.close()
    one = Engine("t", {"a": rule({"x": "1"})}, ["x"])
    assert one.match({"x": "1"}) == ["a"] and one.match({}) == []
    one.close()
