"""Threaded or asyncio server? The same echo on both models, side by side (`make server-model`).

    python -m tests.load.server_model [--seconds 8]

Starts the load test's echo (a canned decision, the real request parsing) once on gRPC's
threaded server, as `serve` runs, and once on ``grpc.aio``, each pinned to one core, and
drives each with h2load on the other core for ``Decide`` (16 connections) and
``DecideBatch`` (100 per call). Prints calls or decisions per second and the server's CPU
per decision, with the asyncio figures as ratios to the threaded ones. Decisions are pure
CPU that never release the GIL, so whichever model spends less CPU on the RPC itself is
the faster server; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from tests.load import h2load, procs
from tests.load.corpus import BUNDLE, build_corpus, write_bodies
from tests.load.harness import _echo_decision


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per run")
    args = parser.parse_args(argv)
    h2load.ensure_h2load()
    cores = sorted(os.sched_getaffinity(0))
    server_core, load_core = cores[0], cores[-1]
    rows: dict[tuple[str, str], tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="order-policy-model-") as tmp:
        work = Path(tmp)
        bodies = write_bodies(build_corpus(BUNDLE), work / "bodies")
        decision_file = work / "decision.bin"
        decision_file.write_bytes(_echo_decision(bodies["Decide"]))
        for kind in ("echo", "echo-aio"):
            with procs.start(kind, 1, [server_core], bundle=BUNDLE, decision_file=decision_file) as srv:
                for rpc, per_call in (("Decide", 1), ("DecideBatch", 100)):
                    selected = bodies[rpc][:16] if rpc == "Decide" else bodies[rpc][:4]
                    connections = max(1, 16 // len(selected))
                    h2load.run(
                        srv.port, selected, core=load_core, log_dir=work / "warm", connections=connections, duration_s=2
                    )
                    cpu0 = srv.cpu()
                    run = h2load.run(
                        srv.port,
                        selected,
                        core=load_core,
                        log_dir=work / "run",
                        connections=connections,
                        duration_s=args.seconds,
                    )
                    cpu = srv.cpu() - cpu0
                    problems = run.problems()
                    if problems:
                        raise SystemExit(f"{kind} {rpc}: {problems[:3]}")
                    decisions = run.calls * per_call
                    rows[kind, rpc] = (decisions / run.wall_s, cpu / decisions * 1e6)
    print(f"{'server model':<24}{'RPC':<13}{'decisions/s':>12}{'CPU us/decision':>17}{'vs threaded':>13}")
    for (kind, rpc), (rate, cpu) in rows.items():
        label = "threaded (grpc.server)" if kind == "echo" else "asyncio (grpc.aio)"
        base_rate, base_cpu = rows["echo", rpc]
        ratio = "" if kind == "echo" else f"{rate / base_rate:.2f}x / {cpu / base_cpu:.2f}x CPU"
        print(f"{label:<24}{rpc:<13}{rate:>12,.0f}{cpu:>17.1f}   {ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
