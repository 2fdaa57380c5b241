"""Correctness of answers: full comparison, pre-check, CLI cross-check, checker under load.

Requests go over gRPC as the exact bytes h2load posts (the channel's serializer is the
identity), so what the pre-check verifies is what the load sends. A decision is
compared field by field (outcome, reasons and follow-ups in order with codes, messages,
rule ids, methods and paths, bundle name/revision/digest, evaluated_at, action, order id,
a non-empty decision id, the explanation when asked and none otherwise); an invalid
request must fail with INVALID_ARGUMENT, ``ErrorInfo.reason`` ``request_invalid`` and
one ``BadRequest`` violation naming the right request field with the core's message.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.load.corpus import REPO, SERVICE, Body, Entry, Expected, frame, pb


def _plain(value: Any) -> Any:
    """JSON data with every number a float (a protobuf Struct holds doubles)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def decision_problems(got: Any, want: Any, explain: bool, revisions: Collection[str] | None = None) -> list[str]:
    """Differences between a ``pb.Decision`` and the core's ``Decision`` (none: equal).

    ``revisions``: during hot swaps, any of these revisions (and its digest) is right.
    """
    problems = []

    def same(what: str, g: Any, w: Any) -> None:
        if g != w:
            problems.append(f"{what}: got {g!r}, want {w!r}")

    same("outcome", pb.Outcome.Name(got.outcome), f"OUTCOME_{want.outcome}")
    same(
        "reasons",
        [(r.code, r.message, r.rule_id) for r in got.reasons],
        [(r.code, r.message, r.rule_id) for r in want.reasons],
    )
    same(
        "follow_ups",
        [(f.code, f.message, f.http_method, f.path, f.rule_id) for f in got.follow_ups],
        [(f.code, f.message, f.http_method, f.path, f.rule_id) for f in want.follow_ups],
    )
    if revisions is None:
        same(
            "bundle",
            (got.bundle.name, got.bundle.revision, got.bundle.digest),
            (want.bundle.name, want.bundle.revision, want.bundle.digest),
        )
    else:
        same("bundle.name", got.bundle.name, want.bundle.name)
        if got.bundle.revision not in revisions or not got.bundle.digest:
            problems.append(f"bundle: revision {got.bundle.revision!r} was never served")
    same("evaluated_at", got.evaluated_at.ToDatetime(tzinfo=dt.UTC), want.now.astimezone(dt.UTC))
    same("action", pb.Action.Name(got.action), f"ACTION_{want.action.upper()}")
    same("order_id", got.order_id, want.order_id)
    if not got.decision_id:
        problems.append("decision_id: empty")
    if explain:
        same("explanation.matched_rules", list(got.explanation.matched_rules), list(want.matched_rules))
        want_facts = _plain(json.loads(json.dumps(dict(want.facts), default=str)))
        same("explanation.facts", json_format.MessageToDict(got.explanation.facts), want_facts)
    elif got.HasField("explanation"):
        problems.append("explanation: present but not asked for")
    return problems


def error_problems(code: int, reason: str, violations: Sequence[tuple[str, str]], want: Expected) -> list[str]:
    """Differences between an error answer and the expected INVALID_ARGUMENT."""
    problems = []
    if code != grpc.StatusCode.INVALID_ARGUMENT.value[0]:
        problems.append(f"status: got {code}, want 3 (INVALID_ARGUMENT)")
    if reason != "request_invalid":
        problems.append(f"reason: got {reason!r}, want 'request_invalid'")
    if list(violations) != [(want.field, want.message)]:
        problems.append(f"violations: got {list(violations)!r}, want {[(want.field, want.message)]!r}")
    return problems


def result_problems(result: Any, entry: Entry, revisions: Collection[str] | None = None) -> list[str]:
    """Check one ``DecideResult``/``DecideStreamResponse`` against its entry."""
    problems = []
    if result.request_id != entry.request_id:
        problems.append(f"request_id: got {result.request_id!r}, want {entry.request_id!r}")
    which = result.WhichOneof("result")
    if entry.expect.invalid:
        if which != "error":
            return [*problems, f"got a {which}, want an error"]
        err = result.error
        problems += error_problems(
            err.code, err.reason, [(v.field, v.description) for v in err.field_violations], entry.expect
        )
    elif which != "decision":
        problems.append(f"got {which} {result.error.reason if which == 'error' else ''}, want a decision")
    else:
        problems += decision_problems(result.decision, entry.expect.decision, entry.request.explain, revisions)
    return problems


def rpc_error_problems(error: grpc.RpcError, entry: Entry) -> list[str]:
    """Check a failed unary call against its entry."""
    if not entry.expect.invalid:
        return [f"failed with {error.code()}: {error.details()}"]
    status = rpc_status.from_call(error)
    if status is None:
        return [f"failed with {error.code()} and no rich status"]
    reason, violations = "", []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [(v.field, v.description) for v in bad.field_violations]
    return error_problems(error.code().value[0], reason, violations, entry.expect)


class RawClient:
    """The three RPCs over one channel, sending pre-serialized request bytes."""

    def __init__(self, address: str, revisions: Collection[str] | None = None) -> None:
        self.revisions = revisions
        self.channel = grpc.insecure_channel(address)
        base = f"/{SERVICE}/"
        self.decide = self.channel.unary_unary(
            base + "Decide", request_serializer=None, response_deserializer=pb.DecideResponse.FromString
        )
        self.batch = self.channel.unary_unary(
            base + "DecideBatch", request_serializer=None, response_deserializer=pb.DecideBatchResponse.FromString
        )
        self.stream = self.channel.stream_stream(
            base + "DecideStream", request_serializer=None, response_deserializer=pb.DecideStreamResponse.FromString
        )

    def close(self) -> None:
        self.channel.close()

    def check_unary(self, entry: Entry, payload: bytes | None = None) -> list[str]:
        try:
            response = self.decide(payload if payload is not None else entry.payload, timeout=10)
        except grpc.RpcError as exc:
            return rpc_error_problems(exc, entry)
        if entry.expect.invalid:
            return ["got a decision, want INVALID_ARGUMENT"]
        problems = decision_problems(response.decision, entry.expect.decision, entry.request.explain, self.revisions)
        if response.request_id != entry.request_id:
            problems.append(f"request_id: got {response.request_id!r}")
        return problems

    def check_batch(self, entries: Sequence[Entry], payload: bytes | None = None) -> list[str]:
        if payload is None:
            payload = pb.DecideBatchRequest(requests=[e.request for e in entries]).SerializeToString()
        try:
            response = self.batch(payload, timeout=30)
        except grpc.RpcError as exc:
            return [f"batch failed with {exc.code()}: {exc.details()}"]
        if len(response.results) != len(entries):
            return [f"batch: {len(response.results)} results for {len(entries)} requests"]
        return [
            f"[{i}] {p}"
            for i, (r, e) in enumerate(zip(response.results, entries, strict=True))
            for p in result_problems(r, e, self.revisions)
        ]

    def check_stream(self, entries: Sequence[Entry], messages: Iterable[bytes] | None = None) -> list[str]:
        if messages is None:
            messages = [pb.DecideStreamRequest(request=e.request).SerializeToString() for e in entries]
        try:
            responses = list(self.stream(iter(list(messages)), timeout=30))
        except grpc.RpcError as exc:
            return [f"stream failed with {exc.code()}: {exc.details()}"]
        if len(responses) != len(entries):
            return [f"stream: {len(responses)} responses for {len(entries)} requests"]
        return [
            f"[{i}] {p}"
            for i, (r, e) in enumerate(zip(responses, entries, strict=True))
            for p in result_problems(r, e, self.revisions)
        ]


def _unframe(data: bytes) -> Iterator[bytes]:
    """The messages of an h2load data file (length-prefixed gRPC messages)."""
    offset = 0
    while offset < len(data):
        flag, size = data[offset], int.from_bytes(data[offset + 1 : offset + 5], "big")
        assert flag == 0, "compressed frame in a data file"
        yield data[offset + 5 : offset + 5 + size]
        offset += 5 + size


def precheck(address: str, entries: Sequence[Entry], bodies: dict[str, list[Body]]) -> list[str]:
    """Send every corpus request once (unary) and every data file once; the problems."""
    client = RawClient(address)
    problems = []
    try:
        with ThreadPoolExecutor(8) as pool:
            for entry, found in zip(entries, pool.map(client.check_unary, entries), strict=True):
                problems += [f"Decide {entry.request_id} ({entry.case}): {p}" for p in found]
        for body in bodies["Decide"]:
            assert frame(body.entries[0].payload) == body.data
            problems += [
                f"{body.path.name}: {p}" for p in client.check_unary(body.entries[0], next(_unframe(body.data)))
            ]
        for body in bodies["DecideBatch"]:
            problems += [f"{body.path.name}: {p}" for p in client.check_batch(body.entries, next(_unframe(body.data)))]
        for body in bodies["DecideStream"]:
            problems += [f"{body.path.name}: {p}" for p in client.check_stream(body.entries, _unframe(body.data))]
    finally:
        client.close()
    return problems


# -- the CLI as the reference ------------------------------------------------------------


def cli_sample(entries: Sequence[Entry], count: int) -> list[Entry]:
    """JSON entries with distinct (action, outcome or error field, appointment) signatures."""
    seen: dict[tuple[Any, ...], Entry] = {}
    for e in entries:
        if e.kind != "json" or e.action not in ("cancel_order", "cancel_appointment"):
            continue
        d = e.expect.decision
        key = (
            e.action,
            e.has_appointment,
            e.expect.field.split("[")[0] if d is None else (d.outcome, tuple(r.code for r in d.reasons)),
        )
        seen.setdefault(key, e)
    picked = list(seen.values())
    step = max(1, len(picked) // count)
    return picked[::step][:count]


def _cli_command() -> list[str]:
    script = Path(sys.executable).parent / "order-policy"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "server"]


def cli_problems(entry: Entry, bundle: Path) -> list[str]:
    """Run ``order-policy decide --format json`` for ``entry``; compare with the corpus answer."""
    req = entry.request
    with tempfile.TemporaryDirectory(prefix="order-policy-cli-") as tmp:
        order = Path(tmp) / "order.json"
        order.write_text(req.order_json, encoding="utf-8")
        argv = [
            *_cli_command(),
            "decide",
            "--bundle",
            str(bundle),
            "--order",
            str(order),
            "--action",
            entry.action,
            "--format",
            "json",
            "--now",
            req.now.ToDatetime(tzinfo=dt.UTC).isoformat(),
        ]
        if req.WhichOneof("appointment_input") == "appointment_json":
            appt = Path(tmp) / "appointment.json"
            appt.write_text(req.appointment_json, encoding="utf-8")
            argv += ["--appointment", str(appt)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO, env=env, check=False)
    try:
        got = json.loads(done.stdout)
    except ValueError:
        return [f"CLI exit {done.returncode}, not JSON: {done.stdout[:200]!r} {done.stderr[:200]!r}"]
    if entry.expect.invalid:
        # The CLI names the snapshot's field (`order.x`), the API the request's (`order_json.x`).
        want_field = entry.expect.field.replace("order_json", "order", 1).replace("appointment_json", "appointment", 1)
        error = got.get("error", {})
        want_message = f"invalid snapshot: `{want_field}`: {entry.expect.message}"
        if done.returncode != 3 or (error.get("code"), error.get("field"), error.get("message")) != (
            "request_invalid",
            want_field,
            want_message,
        ):
            return [f"CLI exit {done.returncode} {got}, want request_invalid on `{want_field}`"]
        return []
    want = entry.expect.decision.to_dict()
    return [] if got == want and done.returncode == 0 else [f"CLI gave {got}, in-process {want}"]


def cli_check(entries: Sequence[Entry], bundle: Path, count: int) -> tuple[int, list[str]]:
    """Cross-check ``count`` entries with the CLI (two at a time); (checked, problems)."""
    sample = cli_sample(entries, count)
    with ThreadPoolExecutor(2) as pool:
        found = list(
            pool.map(lambda e: [f"CLI {e.request_id} ({e.case}): {p}" for p in cli_problems(e, bundle)], sample)
        )
    return len(sample), [p for f in found for p in f]


# -- the second client during the load ---------------------------------------------------


class Checker(threading.Thread):
    """Checks a sample of decisions while the load runs, on its own connection.

    Sends ``per_call`` corpus requests per call (one for Decide) about every
    ``interval`` seconds, through the RPC under load, walking the whole corpus from
    ``start``. ``counters`` is what its calls add to the server's counters.
    """

    def __init__(
        self,
        address: str,
        rpc: str,
        entries: Sequence[Entry],
        *,
        start: int = 0,
        interval: float = 0.02,
        per_call: int = 10,
        revisions: Collection[str] | None = None,
    ) -> None:
        super().__init__(name=f"checker-{rpc}", daemon=True)
        self.address, self.rpc, self.entries = address, rpc, list(entries)
        self.next = start % len(self.entries)
        self.interval = interval
        self.per_call = 1 if rpc == "Decide" else per_call
        self.revisions = revisions
        self.stop = threading.Event()
        self.calls = 0
        self.checked = 0
        self.rpc_count = 0
        self.problems: list[str] = []
        self.counters: collections.Counter[tuple[str, ...]] = collections.Counter()

    def run(self) -> None:
        client = RawClient(self.address, self.revisions)
        try:
            while not self.stop.is_set():
                began = time.monotonic()
                chunk = [self.entries[(self.next + i) % len(self.entries)] for i in range(self.per_call)]
                self.next = (self.next + self.per_call) % len(self.entries)
                if self.rpc == "Decide":
                    found = client.check_unary(chunk[0])
                    self.rpc_count += 1
                elif self.rpc == "DecideBatch":
                    found = client.check_batch(chunk)
                    self.rpc_count += 1
                else:
                    found = client.check_stream(chunk)
                    self.rpc_count += len(chunk)
                self.calls += 1
                self.checked += len(chunk)
                for e in chunk:
                    self.counters.update(e.expect.counters())
                self.problems += [f"checker {self.rpc}: {p}" for p in found[:5]]
                self.stop.wait(max(0.0, self.interval - (time.monotonic() - began)))
        except Exception as exc:
            self.problems.append(f"checker {self.rpc} crashed: {type(exc).__name__}: {exc}")
        finally:
            client.close()
