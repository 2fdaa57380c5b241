"""Where the server's time goes under load: py-spy over a pinned worker, summarised.

    python -m tests.load.profile [--rpc Decide|DecideBatch|DecideStream] [--seconds 15]

Starts the service with one worker pinned as the load test does, loads it with h2load
on the other core, records the worker with ``py-spy record --format raw`` (collapsed
stacks; py-spy must be installed: ``pip install py-spy``) and prints the functions with
the largest inclusive and self shares of the samples of the RPC threads holding the
GIL (``--gil``: CPU work, not threads waiting for the GIL or a lock).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from tests.load import h2load, procs
from tests.load.corpus import BUNDLE, build_corpus, write_bodies


def summarise(collapsed: str, top: int = 25) -> str:
    """Inclusive and self shares per function from py-spy's raw (collapsed) output."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f]
        # Only RPC threads: the idle poller and metrics threads are not request work.
        if not any(
            "_call_behavior" in f
            or "_stream_response_in_pool" in f
            or "_unary_response_in_pool" in f
            or "_handle_call" in f
            for f in frames
        ):
            continue
        total += count
        for name in {_short(f) for f in frames}:
            inclusive[name] += count
        own[_short(frames[-1])] += count
    if not total:
        return "no samples of RPC threads"
    out = [f"{total} samples of RPC threads", "", "inclusive share:"]
    out += [f"  {n / total:6.1%}  {name}" for name, n in inclusive.most_common(top)]
    out += ["", "self share:"]
    out += [f"  {n / total:6.1%}  {name}" for name, n in own.most_common(top)]
    return "\n".join(out)


def _short(frame: str) -> str:
    """``function (path/to/file.py:line)`` -> ``function (file.py)`` with a short path."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rpc", default="Decide", choices=("Decide", "DecideBatch", "DecideStream"))
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--out", type=Path, help="keep py-spy's collapsed stacks here")
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    h2load.ensure_h2load()
    cores = sorted(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="order-policy-profile-") as tmp:
        work = Path(tmp)
        bodies = write_bodies(build_corpus(BUNDLE), work / "bodies")[args.rpc]
        out = args.out or work / "stacks.txt"
        with procs.start("service", 1, [cores[0]], bundle=BUNDLE, decision_file=work / "x") as srv:
            conns = -(-16 // len(bodies))
            h2load.run(srv.port, bodies, core=cores[-1], log_dir=work / "warm", connections=conns, duration_s=2)
            load = threading.Thread(
                target=h2load.run,
                args=(srv.port, bodies),
                kwargs={
                    "core": cores[-1],
                    "log_dir": work / "load",
                    "connections": conns,
                    "duration_s": args.seconds + 2,
                },
            )
            load.start()
            subprocess.run(
                [
                    "taskset",
                    "-c",
                    str(cores[-1]),
                    spy,
                    "record",
                    "--nonblocking",
                    "--gil",
                    "--format",
                    "raw",
                    "-r",
                    "250",
                    "-d",
                    str(int(args.seconds)),
                    "-o",
                    str(out),
                    "-p",
                    str(srv.worker_pids[0]),
                ],
                check=True,
                capture_output=True,
                timeout=args.seconds + 60,
            )
            load.join(args.seconds + 60)
        print(f"{args.rpc}, 1 worker pinned, {args.seconds:g} s")
        print(summarise(out.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
