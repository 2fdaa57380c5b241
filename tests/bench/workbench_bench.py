"""Workbench throughput: matrix time, `decide --input` and `diff --input` inputs per CPU second.

The corpus is the bundle's own cases as the capture writes them (the projection
of each snapshot), repeated to ``--inputs`` lines. Each figure is printed beside
its baseline from the same run: ``orjson.loads`` of the same lines (the floor of
reading a capture) and the in-process decision loop of ``Decider.decide`` alone.
Rates are per CPU second of the process (one core's work, steady on a busy machine);
the commands print their wall-clock rate too.

    python -m tests.bench.workbench_bench --bundle rules/cancellation --inputs 100000
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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


def _rate(argv: list[str]) -> float:
    """The inputs per CPU second a command prints on stderr (its output goes to /dev/null)."""
    run = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    m = re.search(r"; ([\d,]+) per CPU second", run.stderr)
    if not m:
        raise RuntimeError(f"no rate in: {run.stderr[-400:]}")
    return float(m.group(1).replace(",", ""))


def _best(repeat: int, fn: Any) -> float:
    """The least CPU time (seconds) of ``repeat`` runs of ``fn``: what one core needs, whatever
    else the machine runs."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def _decide_all(decider: Any, records: list[Any]) -> None:
    for record in records:
        try:
            decider.decide(record.snapshot())
        except SnapshotError:
            pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="rules/cancellation")
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant; the best counts")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="workbench-bench-"))
    try:
        capture = tmp / "capture.jsonl"
        distinct = corpus(args.bundle, args.inputs, capture)
        decider = build_decider(args.bundle)
        matrix_s = _best(args.repeat, lambda: matrix(decider))
        rows = len(matrix(decider).rows)
        lines = capture.read_bytes().splitlines()
        floor = len(lines) / _best(args.repeat, lambda: [orjson.loads(line) for line in lines])
        records = list(read_inputs(capture))
        loop = len(records) / _best(args.repeat, lambda: _decide_all(decider, records))
        decider.close()
        cmd = [sys.executable, "-m", "server"]
        batch = max(
            _rate(cmd + ["decide", "--bundle", args.bundle, "--input", str(capture), "--format", "json"])
            for _ in range(args.repeat)
        )
        diff = max(
            _rate(cmd + ["diff", args.bundle, args.bundle, "--input", str(capture), "--format", "json"])
            for _ in range(args.repeat)
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"corpus: {args.inputs} capture lines ({distinct} distinct) of bundle {args.bundle}")
    print(
        f"matrix: {rows} rows in {matrix_s:.2f} CPU s; load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores; best of {args.repeat} runs each"
    )
    print(f"{'variant':34} {'inputs/s':>10} {'/ orjson floor':>15} {'/ decide loop':>14} {'target':>8}")
    for name, rate in (
        ("orjson.loads (floor)", floor),
        ("Decider.decide loop (in-process)", loop),
        ("decide --input (CLI)", batch),
        ("diff --input (CLI, per bundle)", diff),
    ):
        miss = "" if rate >= TARGET or "floor" in name or "loop" in name else "  below target"
        print(f"{name:34} {rate:>10,.0f} {rate / floor:>15.3f} {rate / loop:>14.2f} {TARGET:>8,}{miss}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
