"""``order-policy decide --input``: many recorded requests decided in one process, in order.

One output line per request: its decision or its error (a malformed line, or a
snapshot the policy refuses), with the request id and where it was read.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import IO, Any

import orjson

from server.cli import ExitCode
from server.cli.workbench import Progress, Stopwatch, fail
from server.decide import Decider
from server.errors import PolicyError, SnapshotError
from server.workbench import InputError, InputRecord, read_inputs
from server.workbench.inputs import input_files

__all__ = ["run_input"]


def _error_line(record: InputRecord | InputError, code: str, field: str, message: str, as_json: bool) -> bytes:
    """An input's error: ``{"request_id", "file", "line", "error": {"code", "field", "message"}}``."""
    if as_json:
        rid = record.request_id if type(record) is InputRecord else None
        return (
            orjson.dumps(
                {
                    "request_id": rid,
                    "file": record.file,
                    "line": record.line,
                    "error": {"code": code, "field": field, "message": message},
                }
            )
            + b"\n"
        )
    if field and not message.startswith(f"`{field}`"):
        message = f"`{field}`: {message}"
    return f"{record.file}:{record.line}: error[{code}]: {message}\n".encode()


def _decision_line(record: InputRecord, decision: Any, as_json: bool, explain: bool) -> bytes:
    if as_json:
        return (
            orjson.dumps(
                {
                    "request_id": record.request_id,
                    "file": record.file,
                    "line": record.line,
                    **decision.to_dict(explain=explain),
                }
            )
            + b"\n"
        )
    follow = f" + {' '.join(f.code for f in decision.follow_ups)}" if decision.follow_ups else ""
    return (
        f"{record.request_id}  {decision.outcome} {' '.join(r.code for r in decision.reasons)}{follow}"
        f"  ({decision.action} of {decision.order_id})\n"
    ).encode()


def run_input(
    args: argparse.Namespace, decider: Decider, now: dt.datetime | None, capture: Any, out: IO[bytes] | None = None
) -> int:
    """Decide every request of ``args.input``; 0 when all were decided, 3 when any was an error."""
    as_json = args.format == "json"
    out = out or sys.stdout.buffer
    try:
        total = sum(f.stat().st_size for f in input_files(args.input))
    except OSError as exc:
        fail(as_json, "input_io_error", f"cannot read input `{args.input}`: {exc.strerror or exc}")
        return ExitCode.FAILURE
    clock = now or dt.datetime.now(dt.UTC)
    # The bar shares the terminal with the output only when the output goes elsewhere.
    progress = None if sys.stdout.isatty() else Progress("decide", total)
    inputs = read_inputs(args.input)
    decided = errors = 0
    watch = Stopwatch()
    try:
        for record in progress.track(inputs) if progress else inputs:
            if isinstance(record, InputError):
                errors += 1
                out.write(_error_line(record, record.code, record.field, record.message, as_json))
                continue
            try:
                snapshot = record.snapshot(clock)
                decision = decider.decide(snapshot)
            except SnapshotError as exc:
                errors += 1
                out.write(_error_line(record, exc.code, exc.field, exc.message, as_json))
                continue
            except PolicyError as exc:
                errors += 1
                out.write(_error_line(record, exc.code, "", exc.message, as_json))
                continue
            decided += 1
            if capture is not None:
                capture.record(decision, snapshot)
            out.write(_decision_line(record, decision, as_json, args.explain))
    except OSError as exc:
        fail(as_json, "input_io_error", f"cannot read input `{args.input}`: {exc.strerror or exc}")
        return ExitCode.FAILURE
    finally:
        if progress:
            progress.close()
        out.flush()
    print(
        f"{decided + errors} inputs ({decided} decided, {errors} errors) {watch.rate(decided + errors, 'inputs')}",
        file=sys.stderr,
    )
    return ExitCode.INVALID if errors else ExitCode.OK
