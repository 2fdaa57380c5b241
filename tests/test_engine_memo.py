"""The engine adapter's memo: each distinct situation is decided by the engine once per ruleset.

Equivalence is the contract: with the memo on, every input fires exactly the rules the
engine fires for it without the memo.
"""

from __future__ import annotations

import datetime as dt
import gc
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.bundle import load_bundle
from server.cases import load_cases, run_case
from server.decide import Decider
from server.engine import Engine, thresholds
from tests.support.bundles import FIXTURE_BUNDLE as DEFAULT_BUNDLE
from tests.support.bundles import copy_bundle, set_revision, set_value
from tests.support.memory import rss_kib


def rule(m: dict, pri: int = 1) -> dict:
    return {"pri": pri, "all": [{"m": m}]}


# A ruleset with every operator the compiler emits on two numeric facts (shared and
# distinct constants, a negative one), plus strings, booleans and `$or`/`$neq`.
RULES = {
    "far": rule({"$and": [{"has": True}, {"$gt": {"n": 86400}}]}, 1),
    "near": rule({"$and": [{"has": True}, {"$lte": {"n": 86400}}]}, 2),
    "past": rule({"$lt": {"n": 0}}, 3),
    "soon": rule({"$and": [{"$gte": {"n": 3600}}, {"$lt": {"n": 7200}}]}, 4),
    "exact": rule({"n": 3600}, 5),
    "not_exact": rule({"$neq": {"n": 7200}}, 6),
    "late": rule({"$or": [{"$gt": {"m": 10}}, {"$lte": {"m": -5}}, {"s": "x"}]}, 7),
    "m_exists": rule({"$neq": {"m": ""}}, 8),
    "s_is_y": rule({"$and": [{"s": "y"}, {"$neq": {"t": "z"}}]}, 9),
    "both": rule({"$and": [{"has": False}, {"$gte": {"m": 10}}, {"$lte": {"n": -1}}]}, 10),
}
FACTS = ["n", "m", "has", "s", "t"]
POINTS = sorted({-5, -1, 0, 10, 3600, 7200, 86400})


def _number() -> st.SearchStrategy[int | None]:
    near = st.sampled_from(POINTS).flatmap(lambda p: st.sampled_from([p - 1, p, p + 1]))
    return st.one_of(near, st.integers(-(2**40), 2**40), st.integers(-100, 100), st.none())


VECTOR = st.fixed_dictionaries(
    {
        "n": _number(),
        "m": _number(),
        "has": st.one_of(st.booleans(), st.none()),
        "s": st.one_of(st.sampled_from(["x", "y", "", "xy"]), st.none()),
        "t": st.one_of(st.sampled_from(["z", "", "q"]), st.none()),
    }
)


def test_thresholds_are_every_constant_of_each_ordered_fact():
    """Facts compared with an ordering get every integer constant they meet; others none."""
    assert thresholds(RULES) == {"n": [-1, 0, 3600, 7200, 86400], "m": [-5, 10]}


@pytest.fixture(scope="module")
def engines():
    memo = Engine("memo", RULES, FACTS, memo_size=100_000)
    plain = Engine("plain", RULES, FACTS, memo_size=0)
    yield memo, plain
    memo.close()
    plain.close()


def _random_number(rnd: random.Random) -> int | None:
    pick = rnd.random()
    if pick < 0.5:
        return rnd.choice(POINTS) + rnd.choice((-1, 0, 1))
    if pick < 0.7:
        return rnd.randint(-100, 100)
    if pick < 0.95:
        return rnd.randint(-(2**40), 2**40)
    return None


def _random_vector(rnd: random.Random) -> dict[str, object]:
    return {
        "n": _random_number(rnd),
        "m": _random_number(rnd),
        "has": rnd.choice((True, False, None)),
        "s": rnd.choice(("x", "y", "", "xy", None)),
        "t": rnd.choice(("z", "", "q", None)),
    }


@pytest.mark.slow
@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**64))
def test_memo_fires_the_same_rules_as_the_engine_for_100000_vectors(engines, seed):
    """100 seeds x 1,000 vectors (values at, below and above every constant, far ints, absent):
    the memo answers exactly what the engine answers without it."""
    memo, plain = engines
    rnd = random.Random(seed)
    for _ in range(1000):
        values = _random_vector(rnd)
        assert memo.match(values) == plain.match(values), values


@settings(max_examples=500, deadline=None, database=None)
@given(values=VECTOR)
def test_memo_agrees_with_the_engine_on_each_generated_vector(engines, values):
    """The same property, one shrinkable vector per example (a failure shows the smallest vector)."""
    memo, plain = engines
    assert memo.match(values) == plain.match(values)


def test_memo_hits_only_within_an_interval(engines):
    """Values in one interval share an entry; crossing a constant is a new situation."""
    memo = Engine("memo", RULES, FACTS, memo_size=100)
    base = {"m": 0, "has": True, "s": "", "t": ""}
    for n in (86401, 90000, 2**40):  # all strictly above the top constant
        memo.match({**base, "n": n})
    assert (memo.memo_misses, memo.memo_hits) == (1, 2)
    memo.match({**base, "n": 86400})  # at the constant: its own situation
    memo.match({**base, "n": 86399})  # below it: another
    assert memo.memo_misses == 3
    memo.close()


def test_memo_is_bounded_and_stays_correct_when_full():
    """A memo of 8 entries holds at most 8 situations and answers as the engine does."""
    memo = Engine("memo", RULES, FACTS, memo_size=8)
    plain = Engine("plain", RULES, FACTS, memo_size=0)
    for i in range(200):
        values = {"n": i * 997 - 50_000, "m": i % 30 - 10, "has": i % 2 == 0, "s": "xy"[i % 2], "t": ""}
        assert memo.match(values) == plain.match(values)
        assert len(memo._memo) <= 8
    memo.close()
    plain.close()


def test_bool_and_int_values_are_different_situations():
    """`True == 1` in Python, not for the memo: the types are part of the key."""
    eng = Engine("t", {"is_true": rule({"b": True}), "is_one": rule({"b": 1}, 2)}, ["b"], memo_size=10)
    plain = Engine("p", {"is_true": rule({"b": True}), "is_one": rule({"b": 1}, 2)}, ["b"], memo_size=0)
    for value in (True, 1, False, 0, True, 1):
        assert eng.match({"b": value}) == plain.match({"b": value})
    assert eng.memo_misses == 4
    eng.close()
    plain.close()


CASES = load_cases(DEFAULT_BUNDLE)


@pytest.fixture(scope="module", params=[0, 4096], ids=["memo-off", "memo-on"])
def decider(request):
    d = Decider(load_bundle(DEFAULT_BUNDLE), memo_size=request.param)
    yield d
    d.close()


def test_every_bundle_case_passes_with_the_memo_on_and_off(decider):
    """The bundle's own cases, twice each so the second run is answered from the memo when on."""
    for _ in range(2):
        failed = [(c.location, r.differences) for c in CASES if (r := run_case(decider, c)).differences]
        assert failed == []


def _with_refund_window(dest: Path, window: str) -> Path:
    copy_bundle(dest, DEFAULT_BUNDLE)
    set_value(dest / "data" / "settings.yaml", ["params", "refund_window"], window)
    set_revision(dest, f"memo-{window}")
    return dest


def test_a_new_revision_never_answers_from_the_old_revisions_memo(tmp_path):
    """Two revisions whose threshold differs: the same facts, remembered by the first, decide
    by the second's own rules (the memo belongs to one ruleset of one revision)."""
    old = Decider(load_bundle(_with_refund_window(tmp_path / "a", "1h")))
    new = Decider(load_bundle(_with_refund_window(tmp_path / "b", "1000h")))
    now = dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC)
    facts = None
    for case in CASES:  # an appointment 2 days ahead, where the refund window matters
        appt = case.snapshot.appointment
        if not appt or not appt.get("start_at") or "error" in case.expect:
            continue
        appt = {**appt, "start_at": (now + dt.timedelta(days=2)).isoformat()}
        try:
            candidate = old.facts(type(case.snapshot)(case.action, case.snapshot.order, appt, now))
        except Exception:
            continue
        engine_old = old._engines[candidate.action]
        engine_new = new._engines[candidate.action]
        if engine_old.match_uncached(candidate.values) != engine_new.match_uncached(candidate.values):
            facts = candidate
            break
    assert facts is not None, "no case where a 1 h and a 1000 h refund window decide differently"
    first = old.match(facts.action, facts.values)
    assert old.match(facts.action, facts.values) == first
    assert engine_old.memo_hits >= 1
    answer = new.match(facts.action, facts.values)
    assert answer == engine_new.match_uncached(facts.values) != first
    assert engine_new.memo_hits == 0
    old.close()
    new.close()


@pytest.mark.slow
def test_one_million_decisions_with_a_full_memo_keep_memory_flat():
    """1,000,000 decisions through a memo that is full and forgetting (3 in 10 new situations):
    RSS after equals RSS after the warm-up that filled it (within 5 MiB)."""
    eng = Engine("t", RULES, FACTS, memo_size=4096)

    def values(i: int) -> dict[str, object]:
        s = f"s{i % 100_000}" if i % 10 < 3 else f"s{i % 50}"
        return {"n": i % 90_000, "m": i % 21 - 10, "has": i % 2 == 0, "s": s, "t": ""}

    for i in range(60_000):
        eng.match(values(i))
    assert len(eng._memo) == 4096
    gc.collect()
    before = rss_kib()
    for i in range(1_000_000):
        eng.match(values(i))
    gc.collect()
    grown = rss_kib() - before
    assert len(eng._memo) == 4096
    assert eng.memo_hits > 500_000
    assert eng.memo_misses > 250_000
    eng.close()
    assert grown < 5 * 1024, f"RSS grew by {grown} KiB over 1,000,000 decisions"
