"""h2load as the load generator: install, run pinned, read counts and latencies.

h2load speaks gRPC when given ``content-type: application/grpc``, ``te: trailers`` and a
data file holding length-prefixed messages. It posts one data file per process, so a
run is several h2load processes at once, one per data file, all pinned to the load
generator's core. h2load counts HTTP success, not grpc-status: the harness compares the
server's own counters with the counts read here. Latencies come from ``--log-file``
(one line per request: start time, HTTP status, microseconds to the end of the response).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.load.corpus import SERVICE, Body

GRPC_HEADERS = ["-H", "content-type: application/grpc", "-H", "te: trailers"]


def ensure_h2load() -> str:
    """The path of h2load, installing Debian's ``nghttp2-client`` when it is missing."""
    found = shutil.which("h2load")
    if found:
        return found
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "nghttp2-client"]):
        done = subprocess.run([*prefix, *argv], capture_output=True, text=True, env=env, timeout=600, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"h2load is missing and `{' '.join(argv)}` failed: {done.stderr[-500:]}")
    found = shutil.which("h2load")
    if not found:
        raise RuntimeError("nghttp2-client installed but h2load is not on PATH")
    return found


@dataclass
class Result:
    """One h2load process: its counts and per-request latencies (microseconds)."""

    body: Body
    total: int = 0
    done: int = 0
    succeeded: int = 0
    failed: int = 0
    errored: int = 0
    timeout: int = 0
    status_2xx: int = 0
    latencies_us: list[int] = field(default_factory=list)
    output: str = ""

    def problems(self) -> list[str]:
        bad = []
        if self.failed or self.errored or self.timeout:
            bad.append(f"{self.body.path.name}: {self.failed} failed, {self.errored} errored, {self.timeout} timeout")
        if not self.done == self.succeeded == self.status_2xx == len(self.latencies_us):
            bad.append(
                f"{self.body.path.name}: {self.done} done, {self.succeeded} succeeded, "
                f"{self.status_2xx} 2xx, {len(self.latencies_us)} logged"
            )
        return bad


_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
    r"(\d+) failed, (\d+) errored, (\d+) timeout"
)
_STATUS = re.compile(r"status codes: (\d+) 2xx")


def _parse(result: Result, output: str, log_file: Path) -> None:
    result.output = output
    match = _REQUESTS.search(output)
    if match:
        (result.total, _started, result.done, result.succeeded, result.failed, result.errored, result.timeout) = map(
            int, match.groups()
        )
    match = _STATUS.search(output)
    if match:
        result.status_2xx = int(match.group(1))
    if log_file.exists():
        for line in log_file.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 3 and parts[1] == "200":
                result.latencies_us.append(int(parts[-1]))


@dataclass
class Run:
    """Several h2load processes started together; wall time from first start to last end."""

    results: list[Result]
    wall_s: float

    @property
    def calls(self) -> int:
        return sum(r.done for r in self.results)

    def latencies_us(self) -> list[int]:
        return sorted(x for r in self.results for x in r.latencies_us)

    def percentile_ms(self, q: float) -> float:
        lat = self.latencies_us()
        return lat[min(len(lat) - 1, int(len(lat) * q))] / 1000 if lat else float("nan")

    def problems(self) -> list[str]:
        return [p for r in self.results for p in r.problems()]


def run(
    port: int,
    bodies: Sequence[Body],
    *,
    core: int,
    log_dir: Path,
    connections: int = 1,
    count: Sequence[int] | None = None,
    duration_s: float | None = None,
    rps: float | None = None,
    timeout_s: float = 120.0,
) -> Run:
    """Run one h2load per body at once (``connections`` each), pinned to ``core``.

    Either ``count`` (requests per body: exact counts to compare with the server's
    counters) or ``duration_s`` (a bounded warm-up). ``rps`` paces each connection.
    Every process is killed after ``timeout_s``.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    began = time.monotonic()
    for i, body in enumerate(bodies):
        log_file = log_dir / f"{body.path.stem}.log"
        log_file.unlink(missing_ok=True)
        argv = [
            "taskset",
            "-c",
            str(core),
            "h2load",
            "-c",
            str(connections),
            "-m",
            "1",
            "-d",
            str(body.path),
            *GRPC_HEADERS,
            "--log-file",
            str(log_file),
        ]
        if duration_s is not None:
            argv += ["-D", f"{duration_s:g}"]
        else:
            assert count is not None
            argv += ["-n", str(max(count[i], connections))]
        if rps is not None:
            argv += [f"--rps={rps:g}"]
        argv.append(f"http://127.0.0.1:{port}/{SERVICE}/{body.rpc}")
        procs.append(
            (body, log_file, subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        )
    results = []
    for body, log_file, proc in procs:
        try:
            output, _ = proc.communicate(timeout=max(1.0, timeout_s - (time.monotonic() - began)))
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
            output += "\n(killed: timeout)"
        result = Result(body)
        _parse(result, output, log_file)
        if proc.returncode != 0:
            result.errored = result.errored or 1
            result.output += f"\n(exit {proc.returncode})"
        results.append(result)
    return Run(results, time.monotonic() - began)
