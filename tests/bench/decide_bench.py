"""Decision benchmark (`make bench`): per-decision p50, p99 and decisions/s on one core.

Variants, all over the same corpus (the bundle's own valid cases) in the same run:

* full path    raw order JSON text (+ appointment) -> parse -> facts -> engine -> combine
* facts only   decoded snapshot -> facts
* engine only  facts -> the rule ids that hold (the durable_rules adapter)
* floor        a plain-Python dict lookup returning the same rule ids, built from
               the engine's own answers and checked equal to them

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

from server.cases import load_cases
from server.facts import APPOINTMENT_READS, ORDER_READS, parse_json_object
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
    parser.add_argument("--json", help="also write the figures to this JSON file")
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
    for f, matched in zip(facts, expected):
        table[(f.action, *(f.values.get(k) for k in names[f.action]))] = matched

    def floor(i: int) -> list[str]:
        f = facts[i % len(facts)]
        return table[(f.action, *(f.values.get(k) for k in names[f.action]))]

    mismatches = sum(floor(i) != expected[i] for i in range(len(facts)))
    if mismatches:
        raise SystemExit(f"the floor disagrees with the engine on {mismatches} inputs")

    def engine_only(i: int) -> list[str]:
        f = facts[i % len(facts)]
        return decider.match(f.action, f.values)

    def facts_only(i: int) -> Any:
        return decider.facts(snapshots[i % len(snapshots)])

    def full(i: int) -> Any:
        k = i % len(snapshots)
        order_text, appt_text = texts[k]
        s = snapshots[k]
        order = parse_json_object(order_text, "order", ORDER_READS)
        appt = parse_json_object(appt_text, "appointment", APPOINTMENT_READS) if appt_text else None
        return decider.decide(Snapshot(s.action, order, appt, s.now))

    for i in range(len(snapshots)):  # the full path gives the cases' own answers
        assert [r.code for r in full(i).reasons] == [r.code for r in decider.decide(snapshots[i]).reasons]

    gc.collect()
    results = {}
    for name, fn, target in (("floor (dict lookup)", floor, None), ("engine only", engine_only, 15.0),
                             ("facts only", facts_only, None), ("full path", full, 50.0)):
        p50, p99, rate = _measure(fn, args.n)
        results[name] = {"p50_us": round(p50, 2), "p99_us": round(p99, 2), "per_second": round(rate),
                         "target_p50_us": target}
    base = results["floor (dict lookup)"]["p50_us"]
    sizes = sorted(len(t[0]) for t in texts)
    print(f"order-policy decision benchmark: {len(snapshots)} distinct snapshots (order JSON "
          f"{sizes[0]}-{sizes[-1]} bytes), {args.n} decisions per variant, one core, "
          f"Python {platform.python_version()}, bundle {decider.ref.name}@{decider.ref.revision}")
    print(f"{'variant':<22}{'p50 us':>9}{'p99 us':>9}{'per s':>10}{'p50/floor':>11}{'target p50':>12}")
    for name, r in results.items():
        target = f"<= {r['target_p50_us']:.0f} us" if r["target_p50_us"] else ""
        print(f"{name:<22}{r['p50_us']:>9.1f}{r['p99_us']:>9.1f}{r['per_second']:>10}"
              f"{r['p50_us'] / base:>10.1f}x{target:>12}")
        r["ratio_to_floor"] = round(r["p50_us"] / base, 2)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"snapshots": len(snapshots), "n": args.n, "results": results}, f, indent=2)
    decider.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
