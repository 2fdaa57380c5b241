"""Open ``DecideStream`` calls: a cap below the thread count and an idle timeout.

In the thread-per-call gRPC server an open stream holds one RPC thread for as long
as it is open, even while it sends nothing. Without a cap, as many idle streams as
there are threads leave none for unary calls and health checks. So at most
``limit`` streams are open at once (always fewer than the threads: the rest stay
for unary calls and health), a stream beyond the cap is refused at once with
RESOURCE_EXHAUSTED, and a stream that sends no message for ``idle_timeout``
seconds is cancelled, which frees its thread and its slot.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Any

import grpc

from server.api import log

__all__ = ["StreamSlots", "default_stream_limit"]


def default_stream_limit(threads: int) -> int:
    """Three quarters of the RPC threads (at least 1, always below ``threads`` when it is over 1)."""
    return max(1, threads * 3 // 4)


class StreamSlots:
    """At most ``limit`` open streams; those idle longer than ``idle_timeout`` are cancelled."""

    def __init__(self, limit: int, idle_timeout: float | None, on_error: Any = None) -> None:
        self.limit = limit
        self.idle_timeout = idle_timeout if idle_timeout and idle_timeout > 0 else None
        self._on_error = on_error or (lambda code: None)
        self._lock = threading.Lock()
        # key -> [context, monotonic time of the last message]
        self._open: dict[int, list[Any]] = {}
        self._keys = itertools.count()
        self._reaper: threading.Thread | None = None
        self.cancelled = 0

    def open(self, context: grpc.ServicerContext) -> list[Any] | None:
        """A slot for a new stream (touch it per message, close it at the end), or None when full."""
        with self._lock:
            if len(self._open) >= self.limit:
                return None
            slot: list[Any] = [context, time.monotonic(), next(self._keys)]
            self._open[slot[2]] = slot
            if self.idle_timeout is not None and self._reaper is None:
                self._reaper = threading.Thread(target=self._reap, name="stream-idle", daemon=True)
                self._reaper.start()
        return slot

    def close(self, slot: list[Any]) -> None:
        with self._lock:
            self._open.pop(slot[2], None)

    @property
    def open_count(self) -> int:
        return len(self._open)

    def _reap(self) -> None:
        # INVARIANT: this loop never dies: every exception is logged as one JSON line and counted.
        assert self.idle_timeout is not None
        period = min(1.0, self.idle_timeout / 4)
        while True:
            time.sleep(period)
            try:
                limit = time.monotonic() - self.idle_timeout
                with self._lock:
                    if not self._open:  # nothing to watch: the next stream starts a new reaper
                        self._reaper = None
                        return
                    idle = [slot for slot in self._open.values() if slot[1] < limit]
                    for slot in idle:
                        del self._open[slot[2]]  # its slot is free from now on
                for slot in idle:
                    self.cancelled += 1
                    self._on_error("stream_idle_timeout")
                    slot[0].cancel()
            except Exception as exc:
                self._on_error("stream_reaper_failed")
                log.event("stream_reaper_failed", logging.ERROR, error_type=type(exc).__name__)
