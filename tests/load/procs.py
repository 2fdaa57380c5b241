"""The servers under load: started pinned, their CPU time, RSS and metrics counters.

The real server is started exactly as ``make serve`` starts it (the ``order-policy``
entry point of the venv, ``serve --bundle ...``) with ``--host 127.0.0.1 --port N
--workers N --metrics-port M``, under ``taskset`` on the server's cores; each forked
worker is then pinned to a core of its own. CPU time is read from ``/proc/<pid>/stat``
of the parent and every worker; RSS from ``/proc/<pid>/status``.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.load.corpus import REPO

_TICKS = os.sysconf("SC_CLK_TCK")


def order_policy_argv() -> list[str]:
    """The ``order-policy`` command of this environment."""
    script = Path(sys.executable).parent / "order-policy"
    return [str(script)] if script.exists() else [sys.executable, "-m", "server"]


def serve_argv(bundle: Path, port: int, workers: int, metrics_port: int) -> list[str]:
    """``order-policy serve`` as ``make serve`` runs it, plus the load test's flags (the admin
    listener on a free loopback port, so runs side by side never collide on its default)."""
    return [
        *order_policy_argv(),
        "serve",
        "--bundle",
        str(bundle),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--metrics-port",
        str(metrics_port),
        "--admin-address",
        "127.0.0.1:0",
    ]


def echo_argv(port: int, workers: int, decision_file: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tests.load.echo_server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--decision",
        str(decision_file),
    ]


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds of ``pids`` (threads included, children not)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICKS


def rss_kib(pid: int) -> int:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def free_port() -> int:
    from tests.support.servers import free_port as _free

    return _free("127.0.0.1")


@dataclass
class Running:
    """A started server: its parent process, workers and where it listens."""

    kind: str  # "service", "echo" or "echo-aio"
    workers: int
    cores: list[int]
    process: subprocess.Popen[bytes]
    port: int
    metrics_port: int | None
    log_path: Path
    worker_pids: list[int] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pids(self) -> list[int]:
        return [self.process.pid, *[p for p in self.worker_pids if p != self.process.pid]]

    def cpu(self) -> float:
        return cpu_seconds(self.pids)

    def rss(self) -> dict[int, int]:
        """RSS in KiB of every worker (the process itself with one worker)."""
        return {pid: rss_kib(pid) for pid in self.worker_pids}

    def alive(self) -> bool:
        return self.process.poll() is None and all(Path(f"/proc/{p}").exists() for p in self.worker_pids)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def scrape(self) -> collections.Counter[tuple[str, ...]]:
        """The counters the checks compare: decisions, errors and RPC counts, by label."""
        out: collections.Counter[tuple[str, ...]] = collections.Counter()
        for sample in self._samples():
            if sample.name == "order_policy_decisions_total":
                out[("decision", sample.labels["action"], sample.labels["outcome"])] += int(sample.value)
            elif sample.name == "order_policy_errors_total":
                out[("error", sample.labels["code"])] += int(sample.value)
            elif sample.name == "order_policy_rpc_duration_seconds_count":
                out[("rpc", sample.labels["method"])] += int(sample.value)
        return +out

    def handler_seconds(self) -> dict[str, float]:
        """Seconds spent inside the servicer so far, by method (the sum of the service's own
        ``order_policy_rpc_duration_seconds``: wall time from the call's arrival in the
        servicer to its answer, per message for DecideStream)."""
        out: dict[str, float] = collections.defaultdict(float)
        for sample in self._samples():
            if sample.name == "order_policy_rpc_duration_seconds_sum":
                out[sample.labels["method"]] += sample.value
        return dict(out)

    def _samples(self) -> Iterator[Any]:
        """Every sample of the service's /metrics, as prometheus_client parses them."""
        assert self.metrics_port is not None
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            text = r.read().decode()
        for family in text_string_to_metric_families(text):
            yield from family.samples

    def settled_scrape(self, timeout: float = 10.0) -> collections.Counter[tuple[str, ...]]:
        """Counters once they stop moving (calls cut off at a duration's end still finish)."""
        last = self.scrape()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.3)
            now = self.scrape()
            if now == last:
                return now
            last = now
        return last


def _pin(pid: int, cores: set[int]) -> None:
    """Pin every thread of ``pid`` (taskset -p only moves the main thread)."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task), cores)


@contextlib.contextmanager
def start(
    kind: str, workers: int, cores: list[int], *, bundle: Path, decision_file: Path, timeout: float = 60.0
) -> Iterator[Running]:
    """Start the real service or the echo, pinned to ``cores``; stop it on exit."""
    port = free_port()
    metrics_port = free_port() if kind == "service" else None
    argv = (
        serve_argv(bundle, port, workers, metrics_port)
        if kind == "service"
        else echo_argv(port, workers, decision_file)
    )
    if kind == "echo-aio":
        argv.append("--aio")
    argv = ["taskset", "-c", ",".join(map(str, cores)), *argv]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with tempfile.TemporaryDirectory(prefix=f"order-policy-load-{kind}-") as tmp:
        log_path = Path(tmp) / "server.log"
        with open(log_path, "ab") as out:  # O_APPEND: workers' lines never overwrite
            process = subprocess.Popen(
                argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        running = Running(kind, workers, cores, process, port, metrics_port, log_path)
        try:
            _wait_started(running, timeout)
            for i, pid in enumerate(running.worker_pids):
                _pin(pid, {cores[i % len(cores)]})
            if workers > 1:
                _pin(process.pid, {cores[0]})
            from tests.support.servers import wait_serving

            wait_serving(running.address, timeout, alive=lambda: process.poll() is None)
            yield running
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(10)


def _wait_started(running: Running, timeout: float) -> None:
    """Wait for one ``server_started`` log line per worker; learn the worker pids."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running.process.poll() is not None:
            raise RuntimeError(f"{running.kind} server exited {running.process.returncode}:\n{running.log()}")
        started = []
        for line in running.log().splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("event") == "server_started":
                    started.append(int(event.get("pid", running.process.pid)))
        if len(started) >= running.workers:
            running.worker_pids = started[: running.workers]
            if running.workers > 1 and set(started) - set(children(running.process.pid)):
                raise RuntimeError(f"worker pids {started} are not children of {running.process.pid}")
            return
        time.sleep(0.1)
    raise TimeoutError(f"{running.kind} server did not start {running.workers} workers:\n{running.log()}")
