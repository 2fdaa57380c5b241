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
import time
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
    """Send the ``order_policy`` logger's events to ``stream`` (stderr) as JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


def event(name: str, level: int = logging.INFO, /, **fields: Any) -> None:
    """Log one event with scalar ``fields`` (never snapshot content)."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"fields": fields})
