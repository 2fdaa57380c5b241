"""The decision log: one JSON line per decision, never patient data, never dropped silently.

Each entry: decision id, time, action, order id, outcome, reason and follow-up
codes, matched rule ids, bundle name/revision/digest, an input digest (sha256 of
the inputs as the request carried them: the order and appointment JSON text or
typed message, the action and ``now``; computed off the request path and never
by re-serialising parsed input), latency; with shadow evaluation, the
candidate's decision too; with tracing, the call's trace id. Patient details,
addresses and contact data are never copied: only the fields listed here are written.

Writing happens on a background thread from a bounded queue. When the writer
cannot keep up, the caller waits (bounded by ``max_wait``) and ``waits`` counts
it; only if the wait runs out is an entry dropped. Every lost decision (a full
queue, a failed write such as a full disk, an entry that cannot be built) goes
through one drop path: ``dropped`` and ``on_drop`` count it and one JSON log
line says why. A line is written whole or not at all: a short or failed write is
cut back. The writer thread survives any exception, and ``close`` never blocks
longer than its timeout.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

from server.model import Decision

__all__ = ["DecisionLog", "RotatingFile", "entry_of", "input_digest"]

log = logging.getLogger("order_policy.decisionlog")

#: Largest single write (several lines are joined into one write up to this size).
_CHUNK_BYTES = 1 << 20


def _event(name: str, level: int = logging.ERROR, **fields: Any) -> None:
    """One JSON log line (the ``order_policy`` JSON formatter reads ``fields``)."""
    log.log(level, name, extra={"fields": fields})


def input_digest(parts: Iterable[Any]) -> str:
    """sha256 over the inputs as received, each length-prefixed so parts cannot run together.

    A part is text (hashed as its UTF-8 bytes: for a request's JSON fields exactly
    the bytes received), bytes, an int, None, or a protobuf message (hashed as its
    deterministic wire bytes). Parsed JSON is never re-serialised: a hostile
    document (say 1,000 nested arrays) costs no more than its length.
    """
    h = hashlib.sha256()
    for part in parts:
        if part is None:
            h.update(b"-;")
            continue
        if isinstance(part, str):
            data = part.encode("utf-8", "surrogatepass")
        elif isinstance(part, bytes | bytearray):
            data = bytes(part)
        elif isinstance(part, int):
            data = str(part).encode()
        else:
            data = part.SerializeToString(deterministic=True)
        h.update(b"%d:" % len(data))
        h.update(data)
    return "sha256:" + h.hexdigest()


def _summary(d: Decision) -> dict[str, Any]:
    return {
        "outcome": d.outcome,
        "reasons": [r.code for r in d.reasons],
        "follow_ups": [f.code for f in d.follow_ups],
        "rules": list(d.matched_rules),
        "bundle": {"name": d.bundle.name, "revision": d.bundle.revision, "digest": d.bundle.digest},
    }


def entry_of(
    decision: Decision, inputs: Iterable[Any], latency_us: float, shadow: Decision | None = None, trace_id: str = ""
) -> dict[str, Any]:
    """The log entry of one decision (only the allowed fields); ``inputs`` as for :func:`input_digest`."""
    entry = {
        "decision_id": decision.decision_id,
        "time": dt.datetime.now(dt.UTC).isoformat(),
        "action": decision.action,
        "order_id": decision.order_id,
        "now": decision.now.isoformat(),
        **_summary(decision),
        "input_digest": input_digest(inputs),
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
    return (
        a.outcome != b.outcome
        or [r.code for r in a.reasons] != [r.code for r in b.reasons]
        or [f.code for f in a.follow_ups] != [f.code for f in b.follow_ups]
    )


class RotatingFile:
    """An append-only file rotated by size: ``log``, ``log.1`` ... ``log.N``.

    Each :meth:`write` appends its bytes whole or not at all: a short write (a disk
    that fills up mid-line) is cut back to where it started and raised as ENOSPC.
    """

    def __init__(self, path: str | Path, max_bytes: int = 64 * 1024 * 1024, backups: int = 5) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def room(self, first: int) -> int:
        """Bytes the next write may hold without a rotation between its lines
        (``first``: the length of its first line)."""
        if self._size == 0 or self._size + first > self.max_bytes:
            return self.max_bytes  # an empty file, or one the next write rotates first
        return self.max_bytes - self._size

    def write(self, data: bytes) -> None:
        """Append ``data`` in one write, rotating first when it would pass ``max_bytes``."""
        if self._size and self._size + len(data) > self.max_bytes:
            self._rotate()
        start = self._size
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, f"short write: {written} of {len(data)} bytes")
        except OSError:
            # Never leave a torn line: cut the file back to where this write began.
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                self._size = os.fstat(self._fd).st_size
            raise
        self._size = start + written

    def flush(self) -> None:
        """Writes go straight to the file (one system call each): nothing to flush."""

    def _rotate(self) -> None:
        for i in range(self.backups - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.path.exists():
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        fd = self._open()  # if this fails, the old descriptor stays usable
        os.close(self._fd)
        self._fd = fd
        self._size = os.fstat(fd).st_size

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


class _Stdout:
    def room(self, first: int) -> int:
        return _CHUNK_BYTES

    def write(self, data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    def flush(self) -> None:
        sys.stdout.buffer.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.flush()


_Item = tuple[Decision, tuple[Any, ...], float, "Decision | None", str]


def _encode_entry(*item: Any) -> bytes:
    return orjson.dumps(entry_of(*item))


class DecisionLog:
    """Bounded queue + writer thread. ``target`` is ``"-"`` (stdout) or a file path."""

    def __init__(
        self,
        target: str,
        *,
        capacity: int = 10_000,
        max_wait: float = 2.0,
        max_bytes: int = 64 * 1024 * 1024,
        backups: int = 5,
        on_wait: Callable[[], None] | None = None,
        on_drop: Callable[[int], None] | None = None,
        encode: Callable[..., bytes | None] | None = None,
        name: str = "decision_log",
    ) -> None:
        # ``encode``: an item's line without its newline (None: nothing to write); the
        # replayable capture (server.workbench.capture) reuses this writer with its own.
        self._encode = encode or _encode_entry
        self._name = name
        self._sink: Any = _Stdout() if target == "-" else RotatingFile(target, max_bytes, backups)
        self._queue: queue.Queue[_Item] = queue.Queue(capacity)
        self._max_wait = max_wait
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._drop_logged: dict[str, tuple[float, int]] = {}  # reason -> (last logged, drops since)
        self.waits = 0
        self.dropped = 0
        self.written = 0
        self.failures = 0  # exceptions the writer survived
        self._on_wait = on_wait or (lambda: None)
        self._on_drop = on_drop or (lambda n: None)
        self._thread = threading.Thread(target=self._run, name=name.replace("_", "-"), daemon=True)
        self._thread.start()

    def record(
        self,
        decision: Decision,
        inputs: tuple[Any, ...],
        latency_us: float,
        shadow: Decision | None = None,
        trace_id: str = "",
    ) -> None:
        """Queue one decision; waits (bounded) when the writer is behind.

        ``inputs`` are the request's inputs as received (see :func:`input_digest`);
        they are hashed on the writer thread.
        """
        item = (decision, inputs, latency_us, shadow, trace_id)
        if self._closing.is_set():
            self._drop(1, "decision_log_closed", decision_id=decision.decision_id)
            return
        try:
            self._queue.put_nowait(item)
            return
        except queue.Full:
            with self._lock:
                self.waits += 1
            self._on_wait()
        try:
            self._queue.put(item, timeout=self._max_wait)
        except queue.Full:
            self._drop(1, "decision_log_full", decision_id=decision.decision_id)

    def _drop(self, count: int, reason: str, exc: BaseException | None = None, **fields: Any) -> None:
        """The one drop path: count ``count`` lost decisions and log why (one JSON line).

        Every loss is counted; the log line of a reason is written at most once a second
        (a full disk fails every write), saying how many drops it stands for.
        """
        now = time.monotonic()
        with self._lock:
            self.dropped += count
            last, pending = self._drop_logged.get(reason, (0.0, 0))
            pending += count
            quiet = now - last < 1.0
            self._drop_logged[reason] = (last, pending) if quiet else (now, 0)
        try:
            self._on_drop(count)
        except Exception:
            pass
        if quiet:
            return
        count = pending
        if exc is not None:
            fields["error_type"] = type(exc).__name__
            if isinstance(exc, OSError) and exc.errno is not None:
                fields["errno"] = errno.errorcode.get(exc.errno, str(exc.errno))
        _event("decision_log_dropped", reason=reason, dropped=count, sink=self._name, **fields)

    def _run(self) -> None:
        # INVARIANT: the writer never dies: every exception is logged, counted and survived.
        while True:
            batch: list[_Item] = []
            try:
                try:
                    batch.append(self._queue.get(timeout=0.1))
                except queue.Empty:
                    if self._closing.is_set():
                        return
                    continue
                while len(batch) < 512:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                self._write(batch)
            except BaseException as exc:
                with self._lock:
                    self.failures += 1
                self._drop(len(batch), "decision_log_writer_error", exc)

    def _write(self, batch: list[_Item]) -> None:
        lines: list[bytes] = []
        for item in batch:
            try:
                line = self._encode(*item)
                if line is not None:
                    lines.append(line + b"\n")
            except Exception as exc:
                self._drop(1, "decision_log_entry_failed", exc, decision_id=item[0].decision_id)
        start = 0
        while start < len(lines):
            # Join lines into one write, stopping where the file must rotate.
            room = min(self._sink.room(len(lines[start])), _CHUNK_BYTES)
            end, size = start + 1, len(lines[start])
            while end < len(lines) and size + len(lines[end]) <= room:
                size += len(lines[end])
                end += 1
            try:
                self._sink.write(b"".join(lines[start:end]))
            except (OSError, ValueError) as exc:
                self._drop(end - start, "decision_log_write_failed", exc)
            else:
                with self._lock:
                    self.written += end - start
            start = end

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (within ``timeout``), then stop; never blocks longer."""
        self._closing.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            _event("decision_log_close_timeout", logging.WARNING, pending=self._queue.qsize(), timeout_s=timeout)
            return  # the daemon writer may still be writing: leave the sink open
        self._sink.close()
        left = 0
        while True:  # a record() that raced with close(): counted, never silently lost
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
            left += 1
        if left:
            self._drop(left, "decision_log_closed")
