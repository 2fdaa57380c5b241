"""The durable_rules adapter: each defence against a pitfall of durable_rules has a test here.

Every pitfall, the defence in ``server/engine.py`` (its ``INVARIANT (pitfall N)``
comment) and the test below that proves it are listed in ``docs/engine.md``; each
test's docstring starts with the pitfall it guards.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import threading

import pytest

from server import engine as engine_module
from server.engine import CATCH_ALL, MAX_RULES
from server.engine import Engine as _Engine
from server.errors import CompileError, EvalError
from tests.support.memory import rss_kib


def Engine(*args, **kw) -> _Engine:
    """The adapter without its memo: every call here reaches the C engine (see test_engine_memo.py)."""
    kw.setdefault("memo_size", 0)
    return _Engine(*args, **kw)


def rule(m: dict, pri: int = 1) -> dict:
    return {"pri": pri, "all": [{"m": m}]}


def test_every_matching_rule_fires_for_one_input_as_a_fact():
    """Pitfall 2 (docs/engine.md): Facts fire every matching rule (events would fire only the first)."""
    eng = Engine("t", {"a": rule({"x": "1"}, 1), "b": rule({"y": True}, 2), "c": rule({"x": "2"}, 3)}, ["x", "y"])
    assert eng.match({"x": "1", "y": True}) == ["a", "b"]
    eng.close()


def test_rules_come_back_in_priority_order():
    """Pitfall 2 (docs/engine.md): The result lists rules by `pri`, lowest first."""
    eng = Engine("t", {"late": rule({"x": "1"}, 9), "early": rule({"x": "1"}, 2)}, ["x"])
    assert eng.match({"x": "1"}) == ["early", "late"]
    eng.close()


def test_or_with_several_true_branches_reports_the_rule_once():
    """Pitfall 6 (docs/engine.md): `$or` fires once per true branch; the adapter de-duplicates."""
    eng = Engine("t", {"a": rule({"$or": [{"x": "1"}, {"y": True}]})}, ["x", "y"])
    assert eng.match({"x": "1", "y": True}) == ["a"]
    eng.close()


def test_two_thousand_distinct_unmatched_inputs_in_a_row_do_not_crash():
    """Pitfall 4 (docs/engine.md): The catch-all rule keeps `delete_state` away from inputs that matched nothing (it segfaults)."""
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
    """Pitfall 3 (docs/engine.md): 5,000 sequential decisions on one ruleset: a fresh sid each, deleted after (limit is 1,024 live)."""
    eng = Engine("t", {"a": rule({"x": "1"})}, ["x"])
    for i in range(5000):
        assert eng.match({"x": "1" if i % 2 else "0"}) == (["a"] if i % 2 else [])
    eng.close()


def test_the_engine_state_record_never_matches_a_rule():
    """Pitfall 5 (docs/engine.md): A rule that holds for a message without `x` would match the engine's own state record; the marker stops it."""
    eng = Engine("t", {"no_x": rule({"$nex": {"x": 1}})}, ["x"])
    for _ in range(50):
        assert eng.match({"x": "present"}) == []
    eng.close()


def test_a_rule_with_two_patterns_is_refused():
    """Pitfall 7 (docs/engine.md): Two patterns in `all` are a join over two messages and never fire: refused at creation."""
    two = {"pri": 1, "all": [{"m": {"x": "1"}}, {"n": {"y": "1"}}]}
    with pytest.raises(CompileError) as err:
        Engine("t", {"a": two}, ["x", "y"])
    assert err.value.code == "compile_rule_shape"


def test_loose_types_never_reach_the_engine():
    """Pitfall 8 (docs/engine.md): The engine compares `1 == true == "1"`; floats, dicts and lists are refused before it sees them."""
    eng = Engine("t", {"a": rule({"y": True})}, ["y"])
    for bad in (1.0, float("nan"), {"k": 1}, [1]):
        with pytest.raises(EvalError):
            eng.match({"y": bad})
    assert eng.match({"y": "true"}) == ["a"]  # why strict typing matters: the engine itself is loose
    eng.close()


def test_absent_strings_are_sent_as_empty_and_do_not_equal_any_value():
    """Pitfall 8 (docs/engine.md): None becomes "" so `$neq` and equality behave (a missing field is undefined behaviour)."""
    eng = Engine("t", {"eq": rule({"x": "a"}), "neq": rule({"$neq": {"x": "a"}}, 2)}, ["x"])
    assert eng.match({"x": None}) == ["neq"]
    assert eng.match({"x": "a"}) == ["eq"]
    eng.close()


def test_every_operator_the_compiler_emits_behaves_as_documented():
    """Pitfall 15 (docs/engine.md): equality, $neq, $or, $and, $gt, $gte, $lt, $lte with negatives and large numbers."""
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
    """Pitfall 14 (docs/engine.md): Rules and inputs are sent without ASCII escapes, so non-ASCII text matches."""
    eng = Engine("t", {"a": rule({"x": "Zoë ✓"})}, ["x"])
    assert eng.match({"x": "Zoë ✓"}) == ["a"]
    eng.close()


def test_too_many_rules_are_refused_before_the_engine_hangs():
    """Pitfall 11 (docs/engine.md): 513+ rules branching from one test hang create_ruleset forever: refused above the cap."""
    rules = {f"r{i}": rule({"x": f"v{i}"}, 1) for i in range(MAX_RULES + 1)}
    with pytest.raises(CompileError) as err:
        Engine("t", rules, ["x"])
    assert err.value.code == "compile_too_many_rules"


def test_the_caller_ruleset_is_not_mutated():
    """Pitfall 10 (docs/engine.md): Registering mutates what it is given; the adapter only hands over a serialised copy."""
    rs = {"a": rule({"x": "1"})}
    before = repr(rs)
    Engine("t", rs, ["x"]).close()
    assert repr(rs) == before
    assert CATCH_ALL not in rs


def test_a_closed_ruleset_refuses_work():
    """Pitfall 12 (docs/engine.md): Using a deleted ruleset is an error, not a crash."""
    eng = Engine("t", {"a": rule({"x": "1"})}, ["x"])
    eng.close()
    with pytest.raises(EvalError):
        eng.match({"x": "1"})
    eng.close()  # idempotent


def test_eight_threads_get_every_decision_right():
    """Pitfall 13 (docs/engine.md): Concurrent use from 8 threads: the per-ruleset lock keeps every result correct."""
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
    """Pitfall 12 (docs/engine.md): 1,000 create/close cycles: RSS stays flat because close() deletes the ruleset."""
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
    """Pitfall 3 (docs/engine.md): 1,000,000 decisions through one ruleset: RSS after equals RSS after warm-up (within 5 MiB)."""
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
    """Pitfall 8 (docs/engine.md): A ruleset testing one fact, and inputs that lack a fact (sent as absent), still match correctly."""
    eng = Engine("t", {"a": rule({"x": "1"}), "b": rule({"$neq": {"y": "2"}}, 2)}, ["x", "y"])
    assert eng.match({"x": "1"}) == ["a", "b"]
    assert eng.match({"y": "2"}) == []
    eng.close()
    one = Engine("t", {"a": rule({"x": "1"})}, ["x"])
    assert one.match({"x": "1"}) == ["a"]
    assert one.match({}) == []
    one.close()


def test_the_rulesets_per_process_limit_is_refused_cleanly_and_freed_on_close(monkeypatch):
    """Pitfall 12 (docs/engine.md): a process holds at most 131,071 rulesets; past the
    adapter's cap a new ruleset is a compile error (not an engine crash), and closing one
    makes room again. The cap is lowered here to just above what is alive."""
    alive = engine_module._ruleset_count
    monkeypatch.setattr(engine_module, "MAX_RULESETS", alive + 2)
    first = Engine("t", {"a": rule({"x": "1"})}, ["x"])
    second = Engine("t", {"a": rule({"x": "1"})}, ["x"])
    with pytest.raises(CompileError) as err:
        Engine("t", {"a": rule({"x": "1"})}, ["x"])
    assert err.value.code == "compile_too_many_rulesets"
    assert engine_module._ruleset_count == alive + 2
    first.close()
    third = Engine("t", {"a": rule({"x": "1"})}, ["x"])  # room again after a close
    assert third.match({"x": "1"}) == ["a"]
    assert second.match({"x": "1"}) == ["a"]
    second.close()
    third.close()
    assert engine_module._ruleset_count == alive
    assert engine_module.MAX_RULESETS < 131_071  # the engine's own hard limit


def test_no_host_no_threads_and_no_python_inside_the_engine():
    """Pitfalls 1 and 9 (docs/engine.md): the adapter never imports durable_rules' Python
    `Host` (its timer threads race with requests), starts no thread, and registers no
    Python action the engine could call (exceptions there would be swallowed)."""
    script = textwrap.dedent("""
        import sys, threading
        before = threading.active_count()
        from server.registry import build_decider
        from server.engine import Engine
        eng = Engine("t", {"a": {"pri": 1, "all": [{"m": {"x": "1"}}]}}, ["x"])
        for i in range(1000):
            eng.match({"x": str(i % 3)})
        eng.close()
        loaded = sorted(m for m in sys.modules if m == "durable" or m.startswith("durable."))
        print(threading.active_count() - before, loaded)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "0 []"
