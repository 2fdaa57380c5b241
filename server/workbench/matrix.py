"""What a bundle decides, at a glance: one row per action, method, status and situation.

Every cell is decided by ``Decider.decide`` on a synthetic snapshot: the matrix
never evaluates a rule itself. Rows cover each collection method of the
vocabulary with each of its detailed statuses, then each top status alone (an
order without events). Where the decision depends on more than the status, a
row per situation the policy distinguishes (see ``situations``); dimensions that
do not change the decision for a status are folded away, and a status whose
decision depends on nothing else gets one row, situation ``any``.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from server.decide import Decider
from server.errors import SnapshotError
from server.model import ACTIONS, BundleRef, Decision, Snapshot
from server.workbench.situations import Dimensions, dimensions

__all__ = ["ANY", "ERROR", "CellChange", "Matrix", "MatrixRow", "decision_rules", "diff_matrices", "matrix"]

#: The situation of a row whose decision depends on nothing but action, method and status.
ANY = "any"
#: The outcome of a cell that is an invalid snapshot under the policy (an ``invalid`` rule).
ERROR = "ERROR"
ORDER_ID = "matrix-order"


@dataclass(frozen=True)
class MatrixRow:
    """One cell of the matrix and the synthetic snapshot it was decided from.

    ``outcome`` is ``ALLOW``/``DENY``, or ``ERROR`` when the policy refuses the
    snapshot as invalid; then ``decision`` is ``None``, ``error`` says why and
    ``rules`` names the ``invalid`` rule.
    """

    action: str
    method: str
    status: str
    situation: str
    outcome: str
    reasons: tuple[str, ...]
    follow_ups: tuple[str, ...]
    rules: tuple[str, ...]
    decision: Decision | None
    snapshot: Snapshot
    error: SnapshotError | None = None

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.action, self.method, self.status, self.situation)

    @property
    def answer(self) -> tuple[Any, ...]:
        """What a caller would see: outcome, reason and follow-up codes, error field."""
        return (self.outcome, self.reasons, self.follow_ups, self.error.field if self.error else "")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "action": self.action,
            "method": self.method,
            "status": self.status,
            "situation": self.situation,
            "outcome": self.outcome,
            "reasons": list(self.reasons),
            "follow_ups": list(self.follow_ups),
            "rules": list(self.rules),
        }
        if self.error is not None:
            out["error"] = self.error.to_dict()
        return out


@dataclass(frozen=True)
class Matrix:
    """Every row of one bundle at one instant."""

    bundle: BundleRef
    now: dt.datetime
    rows: list[MatrixRow]

    def to_json(self) -> dict[str, Any]:
        """The JSON contract of ``order-policy matrix --format json``."""
        return {
            "bundle": ref_json(self.bundle),
            "now": self.now.isoformat(),
            "rows": [row.to_json() for row in self.rows],
        }


@dataclass(frozen=True)
class CellChange:
    """A cell that differs between two matrices (``None``: the row exists on one side only)."""

    key: tuple[str, str, str, str]
    before: MatrixRow | None
    after: MatrixRow | None


def ref_json(ref: BundleRef) -> dict[str, str]:
    return {"name": ref.name, "revision": ref.revision, "digest": ref.digest}


def decision_rules(decision: Decision) -> tuple[str, ...]:
    """The rules behind a decision's reasons and follow-ups, each once, in that order."""
    ids = [r.rule_id for r in decision.reasons] + [f.rule_id for f in decision.follow_ups]
    return tuple(dict.fromkeys(ids))


def _statuses(decider: Decider, method: str) -> list[tuple[str, str]]:
    """(status, top status) of each row of a method: detailed statuses, then top statuses alone."""
    vocab = decider.bundle.vocabulary
    rank = {high: i for i, high in enumerate(vocab.top_statuses)}
    detailed = sorted(vocab.methods[method], key=lambda s: (rank.get(s.split(".", 1)[0], len(rank)), s))
    return [(s, s.split(".", 1)[0]) for s in detailed] + [(top, top) for top in vocab.top_statuses]


def _order(method: str, status: str, top: str, now: dt.datetime, ship_day: str) -> dict[str, Any]:
    order: dict[str, Any] = {"id": ORDER_ID, "status": top, "details": {"type": method}}
    if status != top:
        order["events"] = [{"id": 1, "created_at": (now - dt.timedelta(hours=1)).isoformat(), "status": status}]
    # A ship day "due" needs an order placed well before now, "later" one placed after it.
    if ship_day == "due":
        order["created_at"] = (now - dt.timedelta(days=30)).isoformat()
    elif ship_day == "later":
        order["created_at"] = (now + dt.timedelta(days=3)).isoformat()
    return order


def _appointment(status: str, seconds: int | None, provider: str | None, now: dt.datetime) -> dict[str, Any]:
    appt: dict[str, Any] = {"id": "matrix-appointment", "order_id": ORDER_ID, "status": status}
    if provider is not None:
        appt["provider"] = provider
    if seconds is not None:
        appt["start_at"] = (now + dt.timedelta(seconds=seconds)).isoformat()
    return appt


def _cell(decider: Decider, key: tuple[str, str, str, str], snapshot: Snapshot) -> MatrixRow:
    try:
        decision = decider.decide(snapshot)
    except SnapshotError as exc:
        return MatrixRow(
            *key,
            outcome=ERROR,
            reasons=(),
            follow_ups=(),
            rules=_invalid_rule(decider, snapshot, exc),
            decision=None,
            snapshot=snapshot,
            error=exc,
        )
    return MatrixRow(
        *key,
        outcome=decision.outcome,
        reasons=tuple(r.code for r in decision.reasons),
        follow_ups=tuple(f.code for f in decision.follow_ups),
        rules=decision_rules(decision),
        decision=decision,
        snapshot=snapshot,
    )


def _invalid_rule(decider: Decider, snapshot: Snapshot, exc: SnapshotError) -> tuple[str, ...]:
    """The ``invalid`` rule behind an error (found among the rules the engine matched)."""
    try:
        matched = decider.match(snapshot.action, decider.facts(snapshot).values)
    except SnapshotError:
        return ()
    rules = decider.compiled[snapshot.action].rules
    for name in matched:
        rule = rules[name]
        if rule.effect == "invalid" and (rule.error_field, rule.error_message) == (exc.field, exc.message):
            return (name,)
    return ()


def _label(*parts: str) -> str:
    return ", ".join(p for p in parts if p)


def _group(
    decider: Decider, action: str, method: str, status: str, top: str, dims: Dimensions, now: dt.datetime
) -> list[MatrixRow]:
    """The rows of one status: every situation decided, then folded where it does not matter."""
    appts: list[tuple[int, int, int] | None] = [None]
    appts += list(
        itertools.product(range(len(dims.appointment_statuses)), range(len(dims.bands)), range(len(dims.providers)))
    )
    cells: dict[tuple[int, tuple[int, int, int] | None], MatrixRow] = {}
    for s, ship in enumerate(dims.ship_days):
        for appt in appts:
            appointment = None
            if appt is not None:
                a, b, p = appt
                appointment = _appointment(
                    dims.appointment_statuses[a].value, dims.bands[b].seconds, dims.providers[p].value, now
                )
            snapshot = Snapshot(action, _order(method, status, top, now, ship.value), appointment, now)
            cells[(s, appt)] = _cell(decider, (action, method, status, ""), snapshot)

    def varies(groups: Any) -> bool:
        return any(len({cells[k].answer for k in keys}) > 1 for keys in groups)

    ships = range(len(dims.ship_days))
    ship_kept = varies([[(s, a) for s in ships] for a in appts])
    kept_ships = list(ships) if ship_kept else [0]
    out: list[MatrixRow] = []
    if not varies([[(s, a) for a in appts] for s in ships]):
        for s in kept_ships:
            out.append(_relabel(cells[(s, None)], _label(dims.ship_days[s].label if ship_kept else "") or ANY))
        return out
    n_status, n_band, n_prov = len(dims.appointment_statuses), len(dims.bands), len(dims.providers)
    for s in kept_ships:
        ship_label = dims.ship_days[s].label if ship_kept else ""
        out.append(_relabel(cells[(s, None)], _label(ship_label, "no appointment")))
        for a in range(n_status):
            band_kept = varies([[(s2, (a, b, p)) for b in range(n_band)] for s2 in ships for p in range(n_prov)])
            prov_kept = varies([[(s2, (a, b, p)) for p in range(n_prov)] for s2 in ships for b in range(n_band)])
            for b in range(n_band) if band_kept else [0]:
                for p in range(n_prov) if prov_kept else [0]:
                    label = _label(
                        ship_label,
                        f"appointment {dims.appointment_statuses[a].label}".strip(),
                        dims.bands[b].label if band_kept else "",
                        dims.providers[p].label if prov_kept else "",
                    )
                    out.append(_relabel(cells[(s, (a, b, p))], label))
    return out


def _relabel(row: MatrixRow, situation: str) -> MatrixRow:
    return MatrixRow(
        row.action,
        row.method,
        row.status,
        situation,
        row.outcome,
        row.reasons,
        row.follow_ups,
        row.rules,
        row.decision,
        row.snapshot,
        row.error,
    )


def matrix(
    decider: Decider,
    *,
    now: dt.datetime | None = None,
    actions: Sequence[str] | None = None,
    compare_with: Sequence[Decider] = (),
) -> Matrix:
    """Every row of ``decider``'s bundle, decided at ``now`` (default: the current second, UTC).

    ``compare_with``: other bundles whose rules' situations are added (for a diff,
    build each side's matrix with the other one here: both then have the same
    situations, and a moved threshold shows as the cells between its two values).

    Raises SnapshotError for an action the bundle has no policy for, or a ``now``
    without a time-zone offset.
    """
    if now is None:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    if now.tzinfo is None or now.utcoffset() is None:
        raise SnapshotError("now", "has no time-zone offset")
    bundle = decider.bundle
    present = [a for a in ACTIONS if a in bundle.policies] + sorted(set(bundle.policies) - set(ACTIONS))
    wanted = list(actions) if actions is not None else present
    for action in wanted:
        if action not in bundle.policies:
            raise SnapshotError(
                "action", f"the bundle has no policy for action `{action}`: it has {', '.join(present)}"
            )
    rows: list[MatrixRow] = []
    for action in wanted:
        others = [(d.bundle.policies[action], d.bundle) for d in compare_with if action in d.bundle.policies]
        dims = dimensions(bundle.policies[action], bundle, others)
        for method in bundle.vocabulary.methods:
            for status, top in _statuses(decider, method):
                rows.extend(_group(decider, action, method, status, top, dims, now))
    return Matrix(decider.ref, now, rows)


def diff_matrices(old: Matrix, new: Matrix) -> list[CellChange]:
    """The cells whose answer (outcome, reasons, follow-ups, error) differs, and rows on one side only.

    Rule ids are shown but not compared: renaming a rule changes no answer. Changes
    come in the new matrix's row order; a row only the old matrix has comes just
    before the new rows of its action, method and status.
    """
    before = {row.key: row for row in old.rows}
    after = {row.key for row in new.rows}
    place: dict[tuple[str, str, str], int] = {}
    changes: list[tuple[int, CellChange]] = []
    for i, row in enumerate(new.rows):
        place.setdefault(row.key[:3], i)
        prev = before.get(row.key)
        if prev is None or prev.answer != row.answer:
            changes.append((i, CellChange(row.key, prev, row)))
    gone = [
        (place.get(row.key[:3], len(new.rows)) - 0.5, CellChange(row.key, row, None))
        for row in old.rows
        if row.key not in after
    ]
    return [c for _, c in sorted(changes + gone, key=lambda pair: pair[0])]
