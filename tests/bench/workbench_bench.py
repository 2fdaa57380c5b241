"""Workbench throughput: matrix time, `decide --input` and `diff --input` inputs per second.

The corpus is the bundle's own cases as the capture writes them (the projection
of each snapshot), repeated to ``--inputs`` lines. Each figure is printed beside
its baseline from the same run: ``orjson.loads`` of the same lines (the floor of
reading a capture) and the in-process decision loop of ``Decider.decide`` alone.

    python -m tests.bench.workbench_bench --bundle rules/cancellation --inputs 100000
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from server.cases import load_cases
from server.errors import SnapshotError
from server.registry import build_decider
from server.workbench import capture_entry, matrix, read_inputs

TARGET = 20_000


def corpus(bundle: str, n: int, path: Path) -> int:
    """Write ``n`` capture lines made from the bundle's decidable cases; returns the distinct count."""
    decider = build_decider(bundle)
    lines = []
    try:
        for case in load_cases(bundle):
            try:
                snapshot = case.snapshot
                decision = decider.decide(snapshot)
            except SnapshotError:
                continue
            lines.append(orjson.dumps(capture_entry(snapshot, decision)))
    finally:
        decider.close()
    with open(path, "wb") as f:
        for i in range(n):
            f.write(lines[i % len(lines)] + b"\n")
    return len(lines)


def _rate(stderr: str) -> float:
    m = re.search(r"\(([\d,]+) inputs/s", stderr)
    if not m:
        raise RuntimeError(f"no rate in: {stderr[-400:]}")
    return float(m.group(1).replace(",", ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="rules/cancellation")
    parser.add_argument("--inputs", type=int, default=100_000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="workbench-bench-"))
    try:
        capture = tmp / "capture.jsonl"
        distinct = corpus(args.bundle, args.inputs, capture)
        decider = build_decider(args.bundle)
        start = time.perf_counter()
        m = matrix(decider)
        matrix_s = time.perf_counter() - start
        start = time.perf_counter()
        count = sum(1 for line in capture.open("rb") if orjson.loads(line))
        floor = count / (time.perf_counter() - start)
        records = [r for r in read_inputs(capture)]
        start = time.perf_counter()
        for r in records:
            try:
                decider.decide(r.snapshot())
            except SnapshotError:
                pass
        loop = len(records) / (time.perf_counter() - start)
        decider.close()
        cmd = [sys.executable, "-m", "server"]
        run = subprocess.run([*cmd, "decide", "--bundle", args.bundle, "--input", str(capture), "--format", "json"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
        batch = _rate(run.stderr)
        run = subprocess.run([*cmd, "diff", args.bundle, args.bundle, "--input", str(capture), "--format", "json"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
        diff = _rate(run.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"corpus: {args.inputs} capture lines ({distinct} distinct) of bundle {args.bundle}")
    print(f"matrix: {len(m.rows)} rows in {matrix_s:.2f} s")
    print(f"{'variant':34} {'inputs/s':>10} {'/ orjson floor':>15} {'/ decide loop':>14} {'target':>8}")
    for name, rate in (("orjson.loads (floor)", floor), ("Decider.decide loop (in-process)", loop),
                       ("decide --input (CLI)", batch), ("diff --input (CLI, per bundle)", diff)):
        miss = "" if rate >= TARGET or "floor" in name or "loop" in name else "  below target"
        print(f"{name:34} {rate:>10,.0f} {rate / floor:>15.3f} {rate / loop:>14.2f} {TARGET:>8,}{miss}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
