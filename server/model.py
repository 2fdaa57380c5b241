"""Plain data shared by every stage: snapshots in, decisions out.

No engine, gRPC or YAML imports here: the API layer converts protobuf to these
types and the CLI prints them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

ACTIONS = ("cancel_order", "cancel_appointment")
ALLOW = "ALLOW"
DENY = "DENY"


@dataclass(frozen=True)
class Snapshot:
    """One request: the action, Junction's order JSON, optionally its appointment, and now.

    ``order`` and ``appointment`` are decoded JSON objects (dicts) exactly as
    Junction returns them; unknown fields are ignored. ``now`` must carry a
    time-zone offset; ``None`` means the server clock.
    """

    action: str
    order: Mapping[str, Any]
    appointment: Mapping[str, Any] | None = None
    now: datetime | None = None


@dataclass(frozen=True)
class BundleRef:
    """Which bundle revision made a decision."""

    name: str
    revision: str
    digest: str = ""


@dataclass(frozen=True)
class Reason:
    """Why the outcome is what it is: a catalogue code, its filled message, the rule."""

    code: str
    message: str
    rule_id: str


@dataclass(frozen=True)
class FollowUp:
    """What the caller should do next; ``http_method``/``path`` when an endpoint applies."""

    code: str
    message: str
    rule_id: str
    http_method: str = ""
    path: str = ""


@dataclass(frozen=True)
class Decision:
    """The answer: outcome, every reason and follow-up, the bundle and the instant used.

    ``facts`` and ``matched_rules`` are the explanation (always computed; shown
    only when asked).
    """

    outcome: str
    reasons: tuple[Reason, ...]
    follow_ups: tuple[FollowUp, ...]
    bundle: BundleRef
    now: datetime
    action: str
    order_id: str
    decision_id: str = ""
    facts: Mapping[str, Any] = field(default_factory=dict)
    matched_rules: tuple[str, ...] = ()

    def to_dict(self, *, explain: bool = False) -> dict[str, Any]:
        """The JSON contract of ``order-policy decide --format json``."""
        out: dict[str, Any] = {
            "outcome": self.outcome,
            "reasons": [{"code": r.code, "message": r.message, "rule_id": r.rule_id} for r in self.reasons],
            "follow_ups": [_follow_up_dict(f) for f in self.follow_ups],
            "bundle": {"name": self.bundle.name, "revision": self.bundle.revision},
            "now": self.now.isoformat(),
            "action": self.action,
            "order_id": self.order_id,
        }
        if explain:
            out["explanation"] = {
                "facts": dict(sorted(self.facts.items())),
                "matched_rules": list(self.matched_rules),
            }
        return out


def _follow_up_dict(f: FollowUp) -> dict[str, str]:
    d = {"code": f.code, "message": f.message, "rule_id": f.rule_id}
    if f.http_method:
        d["method"] = f.http_method
    if f.path:
        d["path"] = f.path
    return d
