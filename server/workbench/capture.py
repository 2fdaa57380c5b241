"""The replayable capture: per decided request, only what the policy can see.

Each line is one request in the format ``diff --input`` and ``decide --input`` read::

    {"request_id": "<decision id>", "action": ..., "now": "<the instant decided at>",
     "order": {...}, "appointment": {...} | null}

``order`` and ``appointment`` keep only the fields facts are derived from
(``server.facts.READ_FIELDS``: ids, method fields, statuses, event statuses and
times, timestamps, appointment status, provider and start); names, addresses,
contact data, dates of birth and free text are never written. ``request_id`` is the
decision id, so a captured request can be found in the decision log. ``now`` is the
instant the request was decided at (the server clock when the caller sent none), so
a replay decides it at that same instant.

Writing reuses the decision log's bounded queue, writer thread and rotating file;
the projection runs on the writer thread, off the request path.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from server.decisionlog import DecisionLog
from server.facts import READ_FIELDS
from server.model import Decision, Snapshot

__all__ = ["Capture", "capture_entry", "project"]


def project(value: Any, spec: Any) -> Any:
    """``value`` with only the fields of ``spec`` (see ``READ_FIELDS``); other types as they are.

    A value whose type facts would refuse (an order field that is a string where an
    object belongs, say) is kept as it is, so the projection fails the same way.
    """
    if spec is None:
        return value
    if isinstance(spec, list):
        return [project(item, spec[0]) for item in value] if type(value) is list else value
    if type(value) is dict or isinstance(value, Mapping):
        return {key: project(value[key], sub) for key, sub in spec.items() if key in value}
    return value


def capture_entry(snapshot: Snapshot, decision: Decision) -> dict[str, Any]:
    """The capture record of one decided request."""
    return {
        "request_id": decision.decision_id,
        "action": snapshot.action,
        "now": decision.now.isoformat(),
        "order": project(snapshot.order, READ_FIELDS["order"]),
        "appointment": (
            None if snapshot.appointment is None else project(snapshot.appointment, READ_FIELDS["appointment"])
        ),
    }


def _line(decision: Decision, inputs: tuple[Snapshot], *_: Any) -> bytes:
    entry = capture_entry(inputs[0], decision)
    try:
        return orjson.dumps(entry)
    except TypeError:  # integers beyond 64 bits: the standard encoder keeps them exact
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":"), default=str).encode()


class Capture:
    """Writes a sample (``sample`` in (0, 1]) of decided requests to a rotating file (or ``-``)."""

    def __init__(
        self,
        target: str,
        *,
        sample: float = 1.0,
        max_bytes: int = 64 * 1024 * 1024,
        backups: int = 5,
        on_wait: Callable[[], None] | None = None,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        if not 0.0 < sample <= 1.0:
            raise ValueError(f"the capture sample rate must be in (0, 1], not `{sample}`")
        self.sample = sample
        self._log = DecisionLog(
            target, max_bytes=max_bytes, backups=backups, on_wait=on_wait, on_drop=on_drop, encode=_line, name="capture"
        )

    def record(self, decision: Decision, snapshot: Snapshot) -> None:
        """Queue one decided request (when it falls in the sample)."""
        if self.sample >= 1.0 or random.random() < self.sample:
            self._log.record(decision, (snapshot,), 0.0)

    @property
    def written(self) -> int:
        return self._log.written

    @property
    def dropped(self) -> int:
        return self._log.dropped

    def close(self, timeout: float = 10.0) -> None:
        """Write everything queued, then stop."""
        self._log.close(timeout)
