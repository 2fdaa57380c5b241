"""The typed results of a decision: small frozen dataclasses, no protobuf in sight."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["BundleRef", "Decision", "Explanation", "FollowUp", "Reason"]

Outcome = Literal["ALLOW", "DENY"]
Action = Literal["cancel_order", "cancel_appointment"]


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason behind an outcome: a stable ``code`` (e.g. ``TERMINAL_STATE``) and its message."""

    code: str
    message: str
    rule_id: str = ""


@dataclass(frozen=True, slots=True)
class FollowUp:
    """Something the caller should do next; ``http_method``/``path`` name Junction's endpoint when one applies."""

    code: str
    message: str
    http_method: str = ""
    path: str = ""
    rule_id: str = ""


@dataclass(frozen=True, slots=True)
class BundleRef:
    """The policy bundle that decided."""

    name: str
    revision: str
    digest: str


@dataclass(frozen=True, slots=True)
class Explanation:
    """How a decision was reached (only when the request asked for it)."""

    facts: dict[str, Any]
    matched_rules: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer of the policy to one request."""

    outcome: Outcome
    reasons: tuple[Reason, ...]
    follow_ups: tuple[FollowUp, ...]
    bundle: BundleRef
    decision_id: str
    evaluated_at: dt.datetime | None
    action: Action
    order_id: str
    request_id: str = ""
    explanation: Explanation | None = field(default=None, compare=False)

    @property
    def allowed(self) -> bool:
        """True when the outcome is ``ALLOW``."""
        return self.outcome == "ALLOW"
