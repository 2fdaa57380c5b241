"""Decision benchmark (`make bench`): per-decision p50, p99 and decisions/s on one core.

Variants, all over the same corpus (the bundle's own valid cases) in the same run:

* full path    raw order JSON text (+ appointment) -> parse -> facts -> engine -> combine
* facts only   decoded snapshot -> facts
* engine only  facts -> the rule ids that hold (the durable_rules adapter)
* floor        a plain-Python dict lookup returning the same rule ids, built from
               the engine's own answers and checked equal to them
* duplicate-key check  the fast check that no object of the order (and appointment) JSON
               holds a key twice, beside the orjson.loads floor: the native scan
               (server._jsonkeys) and the pure-Python fallback (quote counts); and the
               full path with the fallback and with no check at all, beside the full path

Each figure is printed with its ratio to the floor measured side by side, so the
ratios hold on a noisy machine. Nothing is asserted: this prints figures.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import orjson

from server import facts as facts_module
from server.cases import load_cases
from server.facts import APPOINTMENT_READS, ORDER_READS, parse_json_object, read_json_object
from server.model import Snapshot
from server.registry import build_decider


def _measure(fn: Callable[[int], Any], n: int) -> tuple[float, float, float]:
    clock = time.perf_counter_ns
    for i in range(min(n, 2000)):  # warm-up
        fn(i)
    lat = [0] * n
    start = time.perf_counter()
    for i in range(n):
        t = clock()
        fn(i)
        lat[i] = clock() - t
    total = time.perf_counter() - start
    lat.sort()
    return lat[n // 2] / 1e3, lat[int(n * 0.99)] / 1e3, n / total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="rules/cancellation")
    parser.add_argument("-n", type=int, default=100_000, help="decisions per variant")
    parser.add_argument("--json", default="bench-results.json", help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core

    decider = build_decider(args.bundle)
    cases = [c for c in load_cases(args.bundle) if "error" not in c.expect and c.order_json is None]
    snapshots = [c.snapshot for c in cases]
    texts = [(json.dumps(s.order), json.dumps(s.appointment) if s.appointment else None) for s in snapshots]
    facts = [decider.facts(s) for s in snapshots]
    expected = [decider.match(f.action, f.values) for f in facts]

    # The floor: the same answers from a dict keyed by the facts the rulesets test.
    names = {a: decider.compiled[a].fact_names for a in decider.compiled}
    table: dict[tuple[Any, ...], list[str]] = {}
    for f, matched in zip(facts, expected, strict=False):
        table[(f.action, *(f.values.get(k) for k in names[f.action]))] = matched

    def floor(i: int) -> list[str]:
        f = facts[i % len(facts)]
        return table[(f.action, *(f.values.get(k) for k in names[f.action]))]

    mismatches = sum(floor(i) != expected[i] for i in range(len(facts)))
    if mismatches:
        raise SystemExit(f"the floor disagrees with the engine on {mismatches} inputs")

    engines = {a: decider._engines[a] for a in decider.compiled}

    def engine_only(i: int) -> list[str]:
        f = facts[i % len(facts)]
        return engines[f.action].match_uncached(f.values)

    def memo_hit(i: int) -> list[str]:
        f = facts[i % len(facts)]
        return engines[f.action].match(f.values)

    def memo_miss(i: int) -> list[str]:
        f = facts[i % len(facts)]
        engine = engines[f.action]
        engine._memo.clear()
        return engine.match(f.values)

    def orjson_floor(i: int) -> Any:
        order_text, appt_text = texts[i % len(texts)]
        return orjson.loads(order_text), orjson.loads(appt_text) if appt_text else None

    def facts_only(i: int) -> Any:
        return decider.facts(snapshots[i % len(snapshots)])

    def full(i: int) -> Any:
        k = i % len(snapshots)
        order_text, appt_text = texts[k]
        s = snapshots[k]
        # As the service reads them: only what the policy reads is decoded.
        order = read_json_object(order_text, "order", ORDER_READS)
        appt = read_json_object(appt_text, "appointment", APPOINTMENT_READS) if appt_text else None
        return decider.decide(Snapshot(s.action, order, appt, s.now))

    decoded = [(orjson.loads(o), orjson.loads(a) if a else None) for o, a in texts]
    surely_unique = facts_module._surely_unique  # the fast path of parse_json_object

    def duplicate_check(i: int) -> Any:
        k = i % len(texts)
        (order_text, appt_text), (order, appt) = texts[k], decoded[k]
        return surely_unique(order_text, order) and (appt is None or surely_unique(appt_text, appt))

    def full_no_check(i: int) -> Any:
        k = i % len(snapshots)
        order_text, appt_text = texts[k]
        s = snapshots[k]
        order = parse_json_object(order_text, "order")
        appt = parse_json_object(appt_text, "appointment") if appt_text else None
        return decider.decide(Snapshot(s.action, order, appt, s.now))

    native_scan = facts_module._scan_keys
    if native_scan is None:
        print("WARNING: server._jsonkeys is not built: every variant uses the pure-Python duplicate-key check")
    assert all(duplicate_check(i) for i in range(len(texts)))

    for i in range(len(snapshots)):  # the full path gives the cases' own answers
        assert [r.code for r in full(i).reasons] == [r.code for r in decider.decide(snapshots[i]).reasons]
        assert memo_hit(i) == memo_miss(i) == engine_only(i) == expected[i]

    gc.collect()
    # (key, label, baseline key, target ratio to that baseline)
    plan: list[tuple[str, str, Callable[[int], Any], str | None, float | None]] = [
        ("floor", "floor (dict lookup)", floor, None, None),
        ("orjson_floor", "orjson.loads floor", orjson_floor, None, None),
        ("engine", "engine (no memo)", engine_only, "floor", None),
        ("engine_memo_hit", "engine, memo hit", memo_hit, "floor", None),
        ("engine_memo_miss", "engine, memo miss", memo_miss, "engine", None),
        ("facts", "facts only", facts_only, "orjson_floor", None),
        ("full_path", "full path", full, "orjson_floor", 4.0),
        ("duplicate_check", "duplicate-key check", duplicate_check, "orjson_floor", None),
        ("duplicate_check_fallback", "  without the C scan", duplicate_check, "orjson_floor", None),
        ("full_path_fallback", "full path, Python check", full, "full_path", None),
        ("full_path_no_check", "full path, no check", full_no_check, "full_path", None),
    ]
    variants: dict[str, dict[str, Any]] = {}
    for key, _label, fn, _base, _target in plan:
        # the *_fallback variants run with the native scan hidden, as where it is not built
        facts_module._scan_keys = None if key.endswith("_fallback") else native_scan
        p50, p99, rate = _measure(fn, args.n)
        variants[key] = {"p50_us": round(p50, 2), "p99_us": round(p99, 2), "per_s": round(rate)}
    facts_module._scan_keys = native_scan
    sizes = sorted(len(t[0]) for t in texts)
    print(
        f"order-policy decision benchmark: {len(snapshots)} distinct snapshots (order JSON "
        f"{sizes[0]}-{sizes[-1]} bytes), {args.n} decisions per variant, one core, "
        f"Python {platform.python_version()}, bundle {decider.ref.name}@{decider.ref.revision}"
    )
    print(f"{'variant':<22}{'p50 us':>9}{'p99 us':>9}{'per s':>10}   {'ratio to baseline':<32}{'target':<10}")
    for key, label, _fn, base, target in plan:
        r = variants[key]
        ratio = ""
        verdict = ""
        if base is not None:
            r["baseline"] = base
            r["ratio"] = round(r["p50_us"] / variants[base]["p50_us"], 2)
            ratio = f"{r['ratio']:.2f}x {base}"
        if target is not None:
            r["target_ratio"] = target
            verdict = f"<= {target:g}x " + ("met" if r["ratio"] <= target else "MISSED")
        print(f"{label:<22}{r['p50_us']:>9.1f}{r['p99_us']:>9.1f}{r['per_s']:>10}   {ratio:<32}{verdict:<10}")
    hits = sum(e.memo_hits for e in engines.values())
    misses = sum(e.memo_misses for e in engines.values())
    print(
        f"memo: {hits} hits, {misses} misses, {sum(len(e._memo) for e in engines.values())} "
        f"situations remembered for {len(snapshots)} snapshots"
    )
    out = {"python": platform.python_version(), "snapshots": len(snapshots), "n": args.n, "variants": variants}
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=2)
    decider.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
