"""Helpers for testing code that uses order-policy as a library.

``capture_decisions()`` records every decision made in this process while it is
active, whichever :class:`server.decide.Decider` (or server) made it::

    from server.registry import build_decider
    from server.testing import capture_decisions

    decider = build_decider("rules/cancellation")
    with capture_decisions() as decisions:
        my_code_that_decides(decider)
    assert [d.outcome for d in decisions] == ["DENY"]

Captures nest and may be used from several threads; each sees every decision made
while it is open, in the order they were made.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from server import decide
from server.model import Decision

__all__ = ["capture_decisions"]

_lock = threading.Lock()


@contextlib.contextmanager
def capture_decisions() -> Iterator[list[Decision]]:
    """Yield a list that receives every :class:`server.model.Decision` made until the block ends."""
    captured: list[Decision] = []
    observe = captured.append
    with _lock:
        decide.observers = (*decide.observers, observe)
    try:
        yield captured
    finally:
        with _lock:
            decide.observers = tuple(o for o in decide.observers if o is not observe)
