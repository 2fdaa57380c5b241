"""The load corpus: every case of the default bundle as gRPC requests, with answers.

Each bundle case becomes a JSON request (``order_json``/``appointment_json``) and, when
the typed messages can say the same thing exactly, a typed request too. The expected
answer of every request is what the decision core gives in-process for the case's own
snapshot (``build_decider(bundle).decide(case.snapshot)``), which the CLI cross-check in
``check`` ties to ``order-policy decide``. Every twentieth request asks for the
explanation. Two requests with ``ACTION_UNSPECIFIED`` add the one invalid input the
cases cannot express.

h2load posts one data file per process, so the corpus is also written as data files:
one file per unary request chosen for the load (``unary_bodies``), and files holding
100 requests each for ``DecideBatch`` (one ``DecideBatchRequest``) and ``DecideStream``
(100 length-prefixed ``DecideStreamRequest`` messages in one HTTP/2 request).
"""

from __future__ import annotations

import collections
import random
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "rules" / "cancellation"
SERVICE = "orderpolicy.v1.OrderPolicyService"
EXPLAIN_EVERY = 20
PER_CALL = 100  # requests per DecideBatch call and messages per DecideStream call


def ensure_generated() -> None:
    """Generate ``server/_gen`` when missing (it is git-ignored; ``make gen`` makes it)."""
    if not (REPO / "server" / "_gen" / "orderpolicy" / "v1" / "order_policy_pb2.py").exists():
        from server._gen.__main__ import generate

        generate(REPO / "server" / "_gen")


ensure_generated()

from server._gen.orderpolicy.v1 import order_policy_pb2 as pb
from tests.support.snapshots import aware_datetime, case_request

ACTIONS = {"cancel_order": pb.ACTION_CANCEL_ORDER, "cancel_appointment": pb.ACTION_CANCEL_APPOINTMENT}


@dataclass(frozen=True)
class Expected:
    """The answer a request must get: a decision, or INVALID_ARGUMENT naming a field."""

    decision: Any = None  # server.model.Decision
    field: str = ""  # the request field of the violation (for an invalid request)
    message: str = ""  # its description

    @property
    def invalid(self) -> bool:
        return self.decision is None

    def counters(self) -> collections.Counter[tuple[str, ...]]:
        """What answering this request adds to the server's metrics counters."""
        if self.decision is None:
            return collections.Counter({("error", "request_invalid"): 1})
        return collections.Counter({("decision", self.decision.action, self.decision.outcome): 1})


@dataclass(frozen=True)
class Entry:
    """One request of the corpus and its expected answer."""

    request_id: str
    case: str  # the bundle case it came from
    kind: str  # "json" or "typed"
    action: str
    has_appointment: bool
    request: Any  # pb.DecideRequest
    expect: Expected

    @property
    def payload(self) -> bytes:
        return bytes(self.request.SerializeToString())


@dataclass
class Body:
    """One h2load data file: its RPC, the entries it carries and their counter effect."""

    rpc: str  # Decide, DecideBatch, DecideStream
    path: Path
    entries: list[Entry]
    data: bytes = b""

    @property
    def counters(self) -> collections.Counter[tuple[str, ...]]:
        out: collections.Counter[tuple[str, ...]] = collections.Counter()
        for entry in self.entries:
            out.update(entry.expect.counters())
        return out

    @property
    def rpc_count(self) -> int:
        """What one call adds to ``order_policy_rpc_duration_seconds_count{method}``."""
        return len(self.entries) if self.rpc == "DecideStream" else 1


def frame(message: bytes) -> bytes:
    """One gRPC length-prefixed message (uncompressed)."""
    return struct.pack(">BI", 0, len(message)) + message


# Typed inputs come from tests.support.snapshots (typed_order, typed_appointment).


# -- the corpus --------------------------------------------------------------------------


def request_field(core_field: str, request: Any) -> str:
    """The request field the server names for the core's snapshot field (its contract)."""
    for head in ("order", "appointment"):
        if core_field == head or core_field.startswith((head + ".", head + "[")):
            if request.WhichOneof(f"{head}_input") == f"{head}_json":
                return f"{head}_json{core_field[len(head) :]}"
            for core, typed in (
                ("order.details.type", "order.details_type"),
                ("order.lab_test.method", "order.lab_test_method"),
            ):
                if core_field == core or core_field.startswith((core + ".", core + "[")):
                    return typed + core_field[len(core) :]
    return core_field


@dataclass
class Corpus:
    """Every request, the bundle it was answered with, and what could not be sent."""

    entries: list[Entry]
    bundle: Path
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Counts by kind, action, appointment and validity (printed before the load)."""
        count: collections.Counter[str] = collections.Counter()
        for e in self.entries:
            count[e.kind] += 1
            count[e.action] += 1
            count["with appointment" if e.has_appointment else "without appointment"] += 1
            count["invalid" if e.expect.invalid else e.expect.decision.outcome] += 1
            count["explain"] += e.request.explain
        return {"requests": len(self.entries), **dict(sorted(count.items())), "skipped": len(self.skipped)}


def build_corpus(bundle: Path = BUNDLE) -> Corpus:
    """The corpus of ``bundle``'s cases, answered by the in-process decision core."""
    from server.cases import load_cases
    from server.errors import SnapshotError
    from server.registry import build_decider

    decider = build_decider(bundle)
    entries: list[Entry] = []
    skipped: list[str] = []
    try:
        for index, case in enumerate(load_cases(bundle)):
            now = aware_datetime(case.now_text)
            if now is None or case.action not in ACTIONS:
                skipped.append(f"{case.name}: `now` or `action` cannot be sent over gRPC")
                continue
            try:
                reference = Expected(decision=decider.decide(case.snapshot))
                core_error = None
            except SnapshotError as exc:
                reference, core_error = Expected(), exc
            for kind in ("json", "typed"):
                request = case_request(case, typed=kind == "typed")
                if request is None:
                    continue
                request.request_id = f"c{index}-{kind}"
                request.explain = len(entries) % EXPLAIN_EVERY == EXPLAIN_EVERY - 1
                expect = reference
                if core_error is not None:
                    expect = Expected(field=request_field(core_error.field, request), message=core_error.message)
                has_appointment = request.WhichOneof("appointment_input") is not None
                entries.append(
                    Entry(request.request_id, case.name, kind, case.action, has_appointment, request, expect)
                )
    finally:
        decider.close()
    # ACTION_UNSPECIFIED cannot come from a case: add one JSON and one typed request.
    for base in [e for e in entries if not e.expect.invalid][:2]:
        request = pb.DecideRequest()
        request.CopyFrom(base.request)
        request.action = pb.ACTION_UNSPECIFIED
        request.request_id = base.request_id + "-noaction"
        entries.append(
            Entry(
                request.request_id,
                base.case,
                base.kind,
                "unspecified",
                base.has_appointment,
                request,
                Expected(
                    field="action",
                    message="an action is required: `ACTION_CANCEL_ORDER` or `ACTION_CANCEL_APPOINTMENT`",
                ),
            )
        )
    return Corpus(entries, bundle, skipped)


# -- h2load data files -------------------------------------------------------------------


def unary_selection(entries: Sequence[Entry], count: int, seed: int = 5) -> list[Entry]:
    """``count`` requests covering every (kind, action, appointment) group, about one
    in eight of them invalid (real traffic is mostly valid)."""
    rng = random.Random(seed)

    def round_robin(pool: Iterable[Entry], n: int) -> list[Entry]:
        groups: dict[tuple[Any, ...], list[Entry]] = collections.defaultdict(list)
        for e in pool:
            groups[(e.kind, e.action, e.has_appointment)].append(e)
        for members in groups.values():
            rng.shuffle(members)
        keys = sorted(groups, key=str)
        picked: list[Entry] = []
        while len(picked) < n and any(groups.values()):
            for key in keys:
                if groups[key] and len(picked) < n:
                    picked.append(groups[key].pop())
        return picked

    invalid = max(1, count // 8)
    return round_robin((e for e in entries if not e.expect.invalid), count - invalid) + round_robin(
        (e for e in entries if e.expect.invalid), invalid
    )


def _chunks(entries: Sequence[Entry], size: int, seed: int) -> list[list[Entry]]:
    shuffled = list(entries)
    random.Random(seed).shuffle(shuffled)
    chunks = [shuffled[i : i + size] for i in range(0, len(shuffled), size)]
    if len(chunks[-1]) < size:  # top the last chunk up so every call holds `size`
        chunks[-1] += shuffled[: size - len(chunks[-1])]
    return chunks


def write_bodies(corpus: Corpus, directory: Path, unary_count: int = 16) -> dict[str, list[Body]]:
    """Write every h2load data file into ``directory``; bodies by RPC."""
    directory.mkdir(parents=True, exist_ok=True)
    bodies: dict[str, list[Body]] = {"Decide": [], "DecideBatch": [], "DecideStream": []}
    for i, entry in enumerate(unary_selection(corpus.entries, unary_count)):
        bodies["Decide"].append(Body("Decide", directory / f"unary-{i:02d}.bin", [entry], frame(entry.payload)))
    for i, chunk in enumerate(_chunks(corpus.entries, PER_CALL, seed=1)):
        batch = pb.DecideBatchRequest(requests=[e.request for e in chunk])
        bodies["DecideBatch"].append(
            Body("DecideBatch", directory / f"batch-{i:02d}.bin", chunk, frame(batch.SerializeToString()))
        )
    for i, chunk in enumerate(_chunks(corpus.entries, PER_CALL, seed=2)):
        data = b"".join(frame(pb.DecideStreamRequest(request=e.request).SerializeToString()) for e in chunk)
        bodies["DecideStream"].append(Body("DecideStream", directory / f"stream-{i:02d}.bin", chunk, data))
    for body in (b for group in bodies.values() for b in group):
        body.path.write_bytes(body.data)
    return bodies


def merge(counters: Iterable[collections.Counter[tuple[str, ...]]]) -> collections.Counter[tuple[str, ...]]:
    out: collections.Counter[tuple[str, ...]] = collections.Counter()
    for c in counters:
        out.update(c)
    return out
