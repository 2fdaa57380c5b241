"""The decision log: one JSON line per decision, never patient data, never dropped silently.

Each entry: decision id, time, action, order id, outcome, reason and follow-up
codes, matched rule ids, bundle name/revision/digest, an input digest (sha256 of
the canonical input, computed off the request path), latency; with shadow
evaluation, the candidate's decision too; with tracing, the call's trace id. Patient details, addresses and
contact data are never copied: only the fields listed here are written.

Writing happens on a background thread from a bounded queue. When the writer
cannot keep up, the caller waits (bounded by ``max_wait``) and
``waits`` counts it; only if the wait runs out is an entry dropped, and then
``dropped`` counts it and an error is logged.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import queue
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import orjson

from server.model import Decision, Snapshot

__all__ = ["DecisionLog", "RotatingFile", "entry_of"]

log = logging.getLogger("order_policy.decisionlog")


def input_digest(snapshot: Snapshot) -> str:
    """sha256 over the canonical JSON of what was decided (order, appointment, action, now)."""
    doc = {"action": snapshot.action, "order": snapshot.order, "appointment": snapshot.appointment,
           "now": snapshot.now.isoformat() if snapshot.now else None}
    try:
        text = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    except TypeError:
        text = repr(doc).encode()
    return "sha256:" + hashlib.sha256(text).hexdigest()


def _summary(d: Decision) -> dict[str, Any]:
    return {
        "outcome": d.outcome,
        "reasons": [r.code for r in d.reasons],
        "follow_ups": [f.code for f in d.follow_ups],
        "rules": list(d.matched_rules),
        "bundle": {"name": d.bundle.name, "revision": d.bundle.revision, "digest": d.bundle.digest},
    }


def entry_of(decision: Decision, snapshot: Snapshot, latency_us: float,
             shadow: Decision | None = None, trace_id: str = "") -> dict[str, Any]:
    """The log entry of one decision (only the allowed fields)."""
    entry = {
        "decision_id": decision.decision_id,
        "time": dt.datetime.now(dt.UTC).isoformat(),
        "action": decision.action,
        "order_id": decision.order_id,
        "now": decision.now.isoformat(),
        **_summary(decision),
        "input_digest": input_digest(snapshot),
        "latency_us": round(latency_us, 1),
    }
    if trace_id:
        entry["trace_id"] = trace_id
    if shadow is not None:
        entry["shadow"] = _summary(shadow)
        entry["shadow_differs"] = differs(decision, shadow)
    return entry


def differs(a: Decision, b: Decision) -> bool:
    """Do two decisions give the caller a different answer (outcome, reasons or follow-ups)?"""
    return (a.outcome != b.outcome or [r.code for r in a.reasons] != [r.code for r in b.reasons]
            or [f.code for f in a.follow_ups] != [f.code for f in b.follow_ups])


class RotatingFile:
    """An append-only file rotated by size: ``log``, ``log.1`` ... ``log.N``."""

    def __init__(self, path: str | Path, max_bytes: int = 64 * 1024 * 1024, backups: int = 5) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: IO[bytes] = open(self.path, "ab")  # noqa: SIM115 - kept open across writes

    def write(self, data: bytes) -> None:
        if self._f.tell() + len(data) > self.max_bytes and self._f.tell() > 0:
            self._rotate()
        self._f.write(data)

    def flush(self) -> None:
        self._f.flush()

    def _rotate(self) -> None:
        self._f.close()
        for i in range(self.backups - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._f = open(self.path, "ab")  # noqa: SIM115

    def close(self) -> None:
        self._f.close()


class _Stdout:
    def write(self, data: bytes) -> None:
        sys.stdout.buffer.write(data)

    def flush(self) -> None:
        sys.stdout.buffer.flush()

    def close(self) -> None:
        self.flush()


class DecisionLog:
    """Bounded queue + writer thread. ``target`` is ``"-"`` (stdout) or a file path."""

    def __init__(self, target: str, *, capacity: int = 10_000, max_wait: float = 2.0,
                 max_bytes: int = 64 * 1024 * 1024, backups: int = 5,
                 on_wait: Callable[[], None] | None = None, on_drop: Callable[[], None] | None = None) -> None:
        self._sink: Any = _Stdout() if target == "-" else RotatingFile(target, max_bytes, backups)
        self._queue: queue.Queue[tuple[Decision, Snapshot, float, Decision | None, str] | None] = (
            queue.Queue(capacity))
        self._max_wait = max_wait
        self.waits = 0
        self.dropped = 0
        self.written = 0
        self._on_wait = on_wait or (lambda: None)
        self._on_drop = on_drop or (lambda: None)
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self._thread.start()

    def record(self, decision: Decision, snapshot: Snapshot, latency_us: float,
               shadow: Decision | None = None, trace_id: str = "") -> None:
        """Queue one decision; waits (bounded) when the writer is behind."""
        item = (decision, snapshot, latency_us, shadow, trace_id)
        try:
            self._queue.put_nowait(item)
            return
        except queue.Full:
            self.waits += 1
            self._on_wait()
        try:
            self._queue.put(item, timeout=self._max_wait)
        except queue.Full:
            self.dropped += 1
            self._on_drop()
            log.error("decision log full: dropped decision %s", decision.decision_id)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                self._sink.flush()
                return
            batch = [item]
            while len(batch) < 512:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._write(batch)
                    self._sink.flush()
                    return
                batch.append(nxt)
            self._write(batch)

    def _write(self, batch: list[tuple[Decision, Snapshot, float, Decision | None, str]]) -> None:
        try:
            for item in batch:  # line by line, so rotation happens between entries
                self._sink.write(orjson.dumps(entry_of(*item)) + b"\n")
            self._sink.flush()
            self.written += len(batch)
        except OSError:
            self.dropped += len(batch)
            log.exception("decision log write failed: %d decisions lost", len(batch))

    def close(self, timeout: float = 10.0) -> None:
        """Write everything queued, then stop."""
        self._queue.put(None)
        self._thread.join(timeout)
        self._sink.close()
