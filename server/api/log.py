"""Structured JSON logs: one line per event on stderr, never patient data.

Callers log an event name and a few scalar fields (codes, counts, addresses, bundle
revisions). Snapshot content, error messages that may quote it and exception messages
are never passed here: exceptions are logged as their type and stack frames only.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

__all__ = ["configure", "event", "logger"]

logger = logging.getLogger("order_policy")
# With tracing on: returns the current call's trace id ("" outside a call), added to each line.
trace_id: Callable[[], str] | None = None


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "event", "pid", ...fields}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, Any] = {
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            "pid": record.process or os.getpid(),
        }
        if trace_id is not None and (current := trace_id()):
            out["trace_id"] = current
        out.update(getattr(record, "fields", {}))
        return json.dumps(out, default=str, ensure_ascii=False, separators=(",", ":"))


def configure(level: int = logging.INFO, stream: Any = None) -> None:
    """Send the ``order_policy`` logger's events to ``stream`` (stderr) as JSON lines; an
    exception that ends any thread is logged the same way (``thread_crashed``)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    threading.excepthook = _thread_crashed


def _thread_crashed(args: threading.ExceptHookArgs) -> None:
    """``threading.excepthook``: one JSON line with the type and frames (never the message)."""
    if args.exc_type is SystemExit:
        return
    frames = [f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno}:{f.name}" for f in traceback.extract_tb(args.exc_traceback)][
        -8:
    ]
    event(
        "thread_crashed",
        logging.ERROR,
        thread=args.thread.name if args.thread is not None else "",
        error_type=args.exc_type.__name__,
        frames=frames,
    )


def event(name: str, level: int = logging.INFO, /, **fields: Any) -> None:
    """Log one event with scalar ``fields`` (never snapshot content)."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"fields": fields})
