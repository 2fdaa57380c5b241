"""The fleet rehearsal: three ``serve`` processes following one signed bundle URL, under load.

What a fleet on Kubernetes does, on loopback: three ``order-policy serve`` processes, each
with its own state directory, poll one bundle URL (:class:`tests.fleet.bundles.BundleServer`,
an HTTP server with ETags) with the verification key. A load client spreads calls over the
three with gRPC's ``round_robin`` and the retry policy of the Kubernetes manifests
(``deploy/kubernetes/base/client-service-config.json``). Meanwhile, one step after another:

1. publish a new signed revision: all three converge (time printed);
2. publish a broken one (signed, invalid): every instance refuses it and keeps the good one;
3. the bundle server hangs (accepts requests, answers none); kill -9 one instance and restart
   it: it serves its last good revision from its state directory while its first fetch gets
   no answer; then the bundle server goes down (refuses connections); the client sees no
   failure (retries); nobody stops serving while the bundle server is out;
4. bring the bundle server back, publish another good revision: all three converge again.

Pass: zero failed calls, zero wrong decisions (each answer equals the in-process decision
of the revision it names, messages included, and every message is of that revision), the
broken revision never answers, and every step's condition holds. One table says what
happened when. ``--ci`` is the short variant (about a minute) that ``make test`` runs.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.bundles import FIXTURE_BUNDLE

REPO = Path(__file__).resolve().parents[2]
FIXTURE = FIXTURE_BUNDLE
SERVICE_CONFIG = REPO / "deploy" / "kubernetes" / "base" / "client-service-config.json"

__all__ = ["Settings", "Outcome", "main", "rehearse"]


@dataclass(frozen=True)
class Settings:
    """How long each phase lasts; ``CI`` is the short variant."""

    poll_interval: float = 2.0
    steady: float = 5.0  # seconds of plain load between steps
    outage: float = 10.0  # seconds the bundle server stays down
    rate: float = 240.0  # calls per second of the load client (all threads)
    threads: int = 4
    activation_allowance: float = 20.0  # activation (verify, validate, cases, compile) under load
    # The callers' deadline. The manifests' service config says 2 s; the rehearsal checks the
    # retries, not the latency, so it gives calls more on a shared machine (max latency printed).
    deadline: float = 10.0
    fetch_timeout: float = 5.0  # serve --fetch-timeout: what a hung bundle server costs one poll
    instances: int = 3


CI = Settings(poll_interval=1.0, steady=2.0, outage=5.0, rate=150.0, threads=3)


@dataclass
class Outcome:
    """What the rehearsal saw; ``passed`` when every condition held."""

    rows: list[tuple[float, str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    calls: int = 0
    failed: int = 0
    wrong: int = 0
    by_revision: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    failure_times: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # seconds, answered calls
    wrong_examples: list[str] = field(default_factory=list)
    converge_s: list[float] = field(default_factory=list)
    restored_before_url_s: float | None = None

    @property
    def passed(self) -> bool:
        return not self.problems and self.failed == 0 and self.wrong == 0 and self.calls > 0

    def table(self) -> str:
        lines = ["   t (s)  what happened                              result", "  " + "-" * 96]
        lines += [f"  {t:6.1f}  {what:<42} {result}" for t, what, result in self.rows]
        lines.append("  " + "-" * 96)
        revisions = ", ".join(f"{r}: {n}" for r, n in sorted(self.by_revision.items()))
        lines.append(f"  calls {self.calls}, failed {self.failed}, wrong {self.wrong}; answered by {revisions}")
        if self.latencies:
            ordered = sorted(self.latencies)
            p50, p99 = (ordered[int(q * (len(ordered) - 1))] * 1e3 for q in (0.5, 0.99))
            lines.append(f"  latency with retries: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {ordered[-1] * 1e3:.0f} ms")
        if self.failures:
            seconds = collections.Counter(int(t) for t in self.failure_times)
            at = ", ".join(f"{s}-{s + 1} s: {n}" for s, n in sorted(seconds.items()))
            lines.append(f"  failures: {dict(self.failures)}; when: {at}")
        lines += [f"  wrong: {w}" for w in self.wrong_examples]
        lines += [f"  problem: {p}" for p in self.problems]
        lines.append(f"  {'PASS' if self.passed else 'FAIL'}")
        return "\n".join(lines)


# -- the instances -----------------------------------------------------------------------------


class Instance:
    """One ``order-policy serve`` process on a fixed loopback port with its own state directory."""

    def __init__(self, index: int, work: Path, url: str, key: Path, settings: Settings) -> None:
        from tests.support.servers import free_port

        self.index = index
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.state = work / f"state-{index}"
        self.log_path = work / f"serve-{index}.log"
        self.argv = [
            sys.executable,
            "-m",
            "server",
            "serve",
            "--bundle",
            url,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--state-dir",
            str(self.state),
            "--verification-key",
            str(key),
            "--poll-interval",
            str(settings.poll_interval),
            "--grace",
            "5",
            "--fetch-timeout",
            str(settings.fetch_timeout),
            "--admin-address",
            "none",
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                self.argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def kill9(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def terminate(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait; kill -9 after ``timeout``. The exit code (None if it had to be killed)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
                return None
        return self.process.returncode

    def log_tail(self, lines: int = 6) -> str:
        return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def events(self, name: str) -> list[dict[str, Any]]:
        """This instance's JSON log events called ``name`` (all its runs)."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if event.get("event") == name:
                        out.append(event)
        return out


class Probe:
    """Asks one instance directly (no retries) every few ms which revision answers."""

    def __init__(self, instance: Instance, request: Any, start: float) -> None:
        self.instance = instance
        self._request = request
        self._start = start
        self.revision = ""  # the last answer's revision, "" while it does not answer
        self.history: list[tuple[float, str]] = []  # (t, revision or "!CODE") on every change
        self.errors_since: dict[str, int] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"probe-{instance.index}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import grpc

        from server._gen.orderpolicy.v1 import order_policy_pb2_grpc as pb_grpc

        options = [
            ("grpc.enable_retries", 0),
            ("grpc.initial_reconnect_backoff_ms", 50),
            ("grpc.max_reconnect_backoff_ms", 200),
            ("grpc.use_local_subchannel_pool", 1),
        ]
        with grpc.insecure_channel(self.instance.address, options=options) as channel:
            stub = pb_grpc.OrderPolicyServiceStub(channel)
            while not self._stop.wait(0.05):
                try:
                    seen = stub.Decide(self._request, timeout=3).decision.bundle.revision
                except grpc.RpcError as exc:
                    seen = "!" + exc.code().name
                if not self.history or self.history[-1][1] != seen:
                    self.history.append((time.monotonic() - self._start, seen))
                self.revision = "" if seen.startswith("!") else seen

    def back_on(self, t0: float, revision: str) -> float | None:
        """When it answered with ``revision`` again after failing at or after ``t0`` (a restart)."""
        failed = False
        for t, seen in list(self.history):
            if t >= t0 and seen.startswith("!"):
                failed = True
            elif failed and seen == revision:
                return t
        return None

    def errors_between(self, t0: float, t1: float) -> list[tuple[float, str]]:
        """Refusals (errors other than a slow answer) at some moment in [t0, t1] (relative times)."""
        spans = []
        for i, (t, seen) in enumerate(self.history):
            end = self.history[i + 1][0] if i + 1 < len(self.history) else float("inf")
            if seen.startswith("!") and seen != "!DEADLINE_EXCEEDED" and t < t1 and end > t0:
                spans.append((t, seen))
        return spans

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


# -- the load client ---------------------------------------------------------------------------


class Load:
    """Threads calling Decide through one round_robin channel over every instance, checking each answer."""

    def __init__(
        self, addresses: list[str], corpora: dict[str, list[Any]], settings: Settings, outcome: Outcome, start: float
    ) -> None:
        import grpc

        config = service_config(settings.deadline)
        target = "ipv4:" + ",".join(addresses)
        options = [
            ("grpc.service_config", config),
            ("grpc.enable_retries", 1),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        self._channel = grpc.insecure_channel(target, options=options)
        self._corpora = corpora
        self._entries = len(next(iter(corpora.values())))
        self._outcome = outcome
        self._start = start
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._period = settings.threads / settings.rate
        self._threads = [
            threading.Thread(target=self._run, args=(i, settings.threads), name=f"load-{i}", daemon=True)
            for i in range(settings.threads)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _run(self, first: int, step: int) -> None:
        import grpc

        from server._gen.orderpolicy.v1 import order_policy_pb2_grpc as pb_grpc
        from tests.load.check import decision_problems

        stub = pb_grpc.OrderPolicyServiceStub(self._channel)
        index = first
        next_at = time.monotonic()
        while not self._stop.is_set():
            entry = next(iter(self._corpora.values()))[index % self._entries]
            try:
                began = time.monotonic()
                reply = stub.Decide(entry.request)
            except grpc.RpcError as exc:
                with self._lock:
                    self._outcome.calls += 1
                    self._outcome.failed += 1
                    self._outcome.failures[exc.code().name] += 1
                    self._outcome.failure_times.append(time.monotonic() - self._start)
            else:
                revision = reply.decision.bundle.revision
                corpus = self._corpora.get(revision)
                if corpus is None:
                    problems = [f"revision {revision!r} should never answer"]
                else:
                    want = corpus[index % self._entries].expect.decision
                    problems = decision_problems(reply.decision, want, entry.request.explain)
                with self._lock:
                    self._outcome.calls += 1
                    self._outcome.latencies.append(time.monotonic() - began)
                    self._outcome.by_revision[revision] += 1
                    if problems:
                        self._outcome.wrong += 1
                        if len(self._outcome.wrong_examples) < 5:
                            self._outcome.wrong_examples.append(f"{entry.request_id}@{revision}: {problems[0]}")
            index += step
            next_at += self._period
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_at = time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        self._channel.close()


# -- the scenario ------------------------------------------------------------------------------


def service_config(deadline: float) -> str:
    """The callers' service config of the manifests (round_robin, retries), with ``deadline``."""
    config = json.loads(SERVICE_CONFIG.read_text())
    for method in config["methodConfig"]:
        method["timeout"] = f"{deadline:g}s"
    return json.dumps(config)


def _wait(condition: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


def _corpus(revision: Any) -> list[Any]:
    """Every valid-decision request of the revision's cases, with the in-process answer."""
    from tests.load.corpus import build_corpus

    return [e for e in build_corpus(revision.directory).entries if not e.expect.invalid]


@contextlib.contextmanager
def _fleet(work: Path, url: str, key: Path, settings: Settings) -> Iterator[list[Instance]]:
    instances: list[Instance] = []
    while len(instances) < settings.instances:  # distinct ports (a free port may be offered twice)
        candidate = Instance(len(instances), work, url, key, settings)
        if all(candidate.port != i.port for i in instances):
            instances.append(candidate)
    try:
        yield instances
    finally:
        for instance in instances:
            instance.terminate()


def rehearse(settings: Settings = CI, bundle: Path = FIXTURE, out: Any = None) -> Outcome:
    """Run the whole rehearsal; print progress and the table to ``out`` (stdout)."""
    from server.bundle.archive import generate_keypair
    from tests.fleet.bundles import BundleServer, make_revision

    out = out or sys.stdout
    outcome = Outcome()
    if not bundle.is_dir():
        outcome.problems.append(f"fixture bundle `{bundle}` is missing")
        return outcome

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    with tempfile.TemporaryDirectory(prefix="order-policy-fleet-") as tmp:
        work = Path(tmp)
        generate_keypair(work / "signing.pem", work / "signing.pub")
        key = work / "signing.pub"
        say("building signed revisions and their in-process answers ...")
        first, second, broken, fourth = (  # signed serials 1 to 4: each newer than the last
            make_revision(bundle, work, label, work / "signing.pem", serial=serial, good=label != "fleet-3-broken")
            for serial, label in enumerate(("fleet-1", "fleet-2", "fleet-3-broken", "fleet-4"), start=1)
        )
        corpora = {r.label: _corpus(r) for r in (first, second, fourth)}
        server = BundleServer()
        server.publish(first.archive)
        server.start()
        start = time.monotonic()

        def now() -> float:
            return time.monotonic() - start

        def row(what: str, result: str, at: float | None = None) -> None:
            outcome.rows.append((now() if at is None else at, what, result))
            say(f"  {outcome.rows[-1][0]:6.1f}  {what}: {result}")

        def check(ok: bool, problem: str) -> bool:
            if not ok:
                outcome.problems.append(problem)
            return ok

        request = corpora["fleet-1"][0].request
        with _fleet(work, server.url, key, settings) as instances:
            for instance in instances:
                instance.start()
            probes = [Probe(i, request, start) for i in instances]
            load = None
            victim, killed_at, restored, serving_at = None, 0.0, 0.0, float("inf")
            try:
                ok = _wait(lambda: all(p.revision == "fleet-1" for p in probes), 180)
                serving_at = now()
                row(
                    f"{len(instances)} instances started on {server.url.rsplit('/', 1)[-1]}",
                    "all serve fleet-1" if ok else f"serving: {[p.revision for p in probes]}",
                )
                if not check(ok, "the instances did not all start on fleet-1"):
                    outcome.problems += [
                        f"instance {p.instance.index} (exit {p.instance.process.poll()}) log ends: "
                        f"{p.instance.log_tail()}"
                        for p in probes
                        if p.revision != "fleet-1" and p.instance.process is not None
                    ]
                    return outcome
                load = Load([i.address for i in instances], corpora, settings, outcome, start)
                load.start()
                row(
                    "load started",
                    f"{settings.rate:.0f} calls/s, round_robin over {len(instances)}, retry on UNAVAILABLE",
                )
                time.sleep(settings.steady)

                # 1. a new revision converges everywhere
                bound = settings.poll_interval + settings.activation_allowance
                _converge(second, server, probes, bound, outcome, row, check, now)
                time.sleep(settings.steady)

                # 2. a broken revision is refused by every instance
                def refusals(instance: Instance) -> int:  # of the broken revision, for its reason
                    return sum("no_such_fact" in json.dumps(e) for e in instance.events("bundle_refused"))

                refused_before = [refusals(i) for i in instances]
                t0 = now()
                server.publish(broken.archive)
                ok = _wait(lambda: all(refusals(i) > n for i, n in zip(instances, refused_before, strict=True)), bound)
                kept = [p.revision for p in probes]
                check(ok, "not every instance refused fleet-3-broken")
                check(kept == ["fleet-2"] * len(probes), f"after fleet-3-broken the instances serve {kept}")
                row(
                    "published fleet-3-broken (signed, invalid)",
                    f"{'all' if ok else 'NOT all'} refused it within {now() - t0:.1f} s; "
                    f"serving {', '.join(sorted(set(kept)))}",
                    at=t0,
                )
                time.sleep(settings.steady)

                # 3. the bundle server hangs; kill -9 one instance and restart it meanwhile: it serves
                #    its last good revision while its first fetch gets no answer; then the bundle
                #    server goes down altogether
                victim = instances[len(instances) // 2]
                down_at = now()
                server.stall()
                row("bundle server hangs", "accepts requests, answers none")
                time.sleep(min(settings.outage / 3, 2 * settings.poll_interval))
                killed_at = now()  # before the kill: the probe may see it fail at once
                victim.kill9()
                row(f"kill -9 instance {victim.index}", f"pid {victim.process.pid if victim.process else '?'}")
                victim.start()
                probe = probes[victim.index]
                ok = _wait(lambda: probe.back_on(killed_at, "fleet-2") is not None, 60)
                restored = (probe.back_on(killed_at, "fleet-2") or now()) - killed_at
                if not check(ok, f"restarted instance {victim.index} did not serve fleet-2 from its state directory"):
                    outcome.problems.append(f"its log ends: {victim.log_tail()}; probe saw {probe.history[-4:]}")
                check(not server.answering.is_set(), "the bundle server answered before the instance served")
                outcome.restored_before_url_s = restored if ok else None
                row(
                    f"instance {victim.index} restarted",
                    f"serves fleet-2 after {restored:.1f} s, restored from its state directory; URL answers nothing"
                    if ok
                    else "did NOT serve fleet-2",
                )
                server.stop()
                row("bundle server down", "port refuses connections")
                time.sleep(max(settings.poll_interval, settings.outage - (now() - down_at)))
                server.start()
                up_at = now()
                others = [p for p in probes if p is not probe]
                gaps = [(p.instance.index, e) for p in others for e in p.errors_between(down_at, up_at)]
                gaps += [(victim.index, e) for e in probe.errors_between(killed_at + restored, up_at)]
                check(not gaps, f"instances stopped serving while the bundle server was down: {gaps[:5]}")
                row(
                    "bundle server back (still fleet-3-broken)",
                    f"out {up_at - down_at:.1f} s in all; every instance kept serving"
                    if not gaps
                    else f"answers failed meanwhile: {gaps[:3]}",
                )
                time.sleep(settings.steady)

                # 4. a good revision after the outage converges everywhere again
                _converge(fourth, server, probes, bound, outcome, row, check, now)
                time.sleep(settings.steady)
            finally:
                if load is not None:
                    load.stop()
                    row("load stopped", f"{outcome.calls} calls")
                for p in probes:
                    p.stop()
            for p in probes:  # errors seen by the direct probes (3 s deadline), outside the restart
                stalls = [
                    f"{t:.1f} {seen[1:]}"
                    for t, seen in p.history
                    if seen.startswith("!")
                    and t >= serving_at
                    and not (p.instance is victim and killed_at <= t <= killed_at + restored)
                ]
                if stalls:
                    outcome.rows.append((now(), f"probe of instance {p.instance.index} saw", ", ".join(stalls[:6])))
            codes = [i.terminate() for i in instances]
            check(codes == [0] * len(instances), f"SIGTERM exit codes {codes}")
            row("SIGTERM to every instance", f"exit codes {codes}")
        server.stop()
    if "fleet-3-broken" in outcome.by_revision:
        outcome.problems.append("fleet-3-broken answered calls")
    say("")
    say(outcome.table())
    return outcome


def _converge(
    revision: Any,
    server: Any,
    probes: list[Probe],
    bound: float,
    outcome: Outcome,
    row: Callable[..., None],
    check: Callable[[bool, str], bool],
    now: Callable[[], float],
) -> None:
    """Publish ``revision`` and wait until every instance answers with it (at most ``bound`` s)."""
    t0 = now()
    server.publish(revision.archive)
    ok = _wait(lambda: all(p.revision == revision.label for p in probes), bound)
    times = []
    for p in probes:
        first = next((t for t, seen in p.history if seen == revision.label and t >= t0), None)
        times.append(None if first is None else first - t0)
    check(ok, f"not every instance converged on {revision.label} within {bound:.0f} s: {times}")
    detail = ", ".join("-" if t is None else f"{t:.1f}" for t in times)
    if ok:
        outcome.converge_s.append(max(t for t in times if t is not None))
        row(
            f"published {revision.label}",
            f"all on it after {outcome.converge_s[-1]:.1f} s (each: {detail}; allowed {bound:.0f} s)",
            at=t0,
        )
    else:
        row(f"published {revision.label}", f"NOT all on it within {bound:.0f} s (each: {detail})", at=t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fleet", description=__doc__.splitlines()[0])
    parser.add_argument("--ci", action="store_true", help="the short variant (about a minute)")
    parser.add_argument("--bundle", type=Path, default=FIXTURE, help="bundle directory to derive revisions from")
    args = parser.parse_args(argv)
    outcome = rehearse(CI if args.ci else Settings(), args.bundle)
    return 0 if outcome.passed else 1
