"""Recorded requests: reading a capture (JSON lines) or a directory of request files.

One request per line (or per ``.json`` file)::

    {"request_id": "r-1", "action": "cancel_order", "now": "2026-03-10T12:00:00+00:00",
     "order": {...}, "appointment": {...}}

``request_id`` is optional (the file and line stand in), ``appointment`` may be
absent or null, ``now`` may be absent (the caller picks one instant for all such
requests), other top-level keys are ignored. What is wrong with a line's envelope
is an :class:`InputError` naming the file and line; what is wrong inside the order
or appointment is for the decider to say, as it would for a live request.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple

import orjson

from server.errors import SnapshotError
from server.facts import parse_timestamp
from server.model import Snapshot

__all__ = ["MAX_LINE_BYTES", "InputError", "InputRecord", "input_files", "read_inputs"]

#: The longest line (or request file) read; the service's own request limit.
MAX_LINE_BYTES = 4 * 1024 * 1024


class InputRecord(NamedTuple):
    """One recorded request and where it was read (``size``: its bytes, for progress)."""

    request_id: str
    action: str
    now: dt.datetime | None
    order: Any
    appointment: Any
    file: str
    line: int
    size: int = 0

    def snapshot(self, now: dt.datetime | None = None) -> Snapshot:
        """The request as a snapshot; ``now`` stands in when the record has none."""
        return Snapshot(self.action, self.order, self.appointment, self.now or now)


@dataclass(frozen=True, slots=True)
class InputError:
    """A line (or file) that is not a request: where it is and what is wrong."""

    file: str
    line: int
    message: str
    field: str = ""
    size: int = 0
    code: str = "input_invalid"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "file": self.file, "line": self.line, "field": self.field, "message": self.message}


def input_files(path: str | Path) -> list[Path]:
    """The files a path stands for: itself, or a directory's ``*.json`` and ``*.jsonl*`` files by name.

    Rotated captures (``capture.jsonl.1`` ...) count as JSON lines. Raises OSError
    when the path cannot be read.
    """
    root = Path(path)
    if not root.is_dir():
        if not root.exists():
            raise FileNotFoundError(f"`{root}` does not exist")
        return [root]
    return sorted(p for p in root.iterdir() if not p.is_dir() and (p.suffix == ".json" or ".jsonl" in p.name))


def read_inputs(path: str | Path) -> Iterator[InputRecord | InputError]:
    """Every request of a ``.jsonl`` file or a directory, in order, or the error of each bad line.

    Raises OSError (first ``next``) when a file cannot be read.
    """
    for file in input_files(path):
        if file.suffix == ".json":
            yield from _whole_file(file)
        else:
            yield from _lines(file)


def _whole_file(file: Path) -> Iterator[InputRecord | InputError]:
    with open(file, "rb") as f:
        data = f.read(MAX_LINE_BYTES + 1)
    if len(data) > MAX_LINE_BYTES:
        yield InputError(str(file), 1, f"file larger than {MAX_LINE_BYTES} bytes", size=len(data))
        return
    yield parse_line(data, str(file), 1)


def _lines(file: Path) -> Iterator[InputRecord | InputError]:
    name = str(file)
    with open(file, "rb") as f:
        number = 0
        while True:
            raw = f.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            number += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                size = len(raw) + _skip_line(f)
                yield InputError(name, number, f"line longer than {MAX_LINE_BYTES} bytes", size=size)
                continue
            if raw.isspace():
                continue
            yield parse_line(raw, name, number)


def _skip_line(f: IO[bytes]) -> int:
    skipped = 0
    while True:
        chunk = f.readline(1024 * 1024)
        skipped += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return skipped


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _float_event_id(doc: dict[str, Any]) -> bool:
    order = doc.get("order")
    if type(order) is not dict:
        return False
    events = order.get("events")
    found = type(events) is list and any(type(e) is dict and type(e.get("id")) is float for e in events)
    last = order.get("last_event")
    return found or (type(last) is dict and type(last.get("id")) is float)


def parse_line(raw: bytes, file: str, line: int) -> InputRecord | InputError:
    """One request from its JSON text, or what is wrong with it."""
    size = len(raw)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return InputError(file, line, f"not valid JSON: {str(exc).splitlines()[0][:120]}", size=size)
    if type(doc) is not dict:
        return InputError(file, line, f"expected a JSON object, got {_kind(doc)}", size=size)
    if _float_event_id(doc):
        # orjson reads integers beyond 64 bits as floats; event ids must stay exact integers
        # (elsewhere any number is refused alike). The standard parser keeps them exact.
        doc = json.loads(raw)
    action = doc.get("action")
    if type(action) is not str:
        return InputError(
            file,
            line,
            "`action` missing" if action is None else f"`action`: expected a string, got {_kind(action)}",
            "action",
            size,
        )
    order = doc.get("order")
    if type(order) is not dict:
        return InputError(
            file,
            line,
            "`order` missing" if order is None else f"`order`: expected an object, got {_kind(order)}",
            "order",
            size,
        )
    appointment = doc.get("appointment")
    if appointment is not None and type(appointment) is not dict:
        return InputError(
            file, line, f"`appointment`: expected an object or null, got {_kind(appointment)}", "appointment", size
        )
    request_id = doc.get("request_id")
    if request_id is None:
        request_id = f"{file}:{line}"
    elif type(request_id) is not str:
        return InputError(file, line, f"`request_id`: expected a string, got {_kind(request_id)}", "request_id", size)
    now_text = doc.get("now")
    now = None
    if now_text is not None:
        try:
            now = parse_timestamp(now_text, "now")
        except SnapshotError as exc:
            return InputError(file, line, f"`now`: {exc.message}", "now", size)
    return InputRecord(request_id, action, now, order, appointment, file, line, size)
