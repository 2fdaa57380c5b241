"""``order-policy diff OLD NEW``: what changes between two bundles, before shipping.

Without ``--input`` the two matrices are compared cell by cell. With ``--input``
every recorded request is decided by both bundles at its own ``now`` and the
differences are grouped by transition.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from server.cli import ExitCode
from server.cli.matrix import HEADER, cells
from server.cli.workbench import Table, load, parse_now, render
from server.decide import Decider
from server.workbench import CellChange, Matrix, diff_matrices, matrix
from server.workbench.matrix import ref_json

FORMATS = ("text", "markdown", "json")


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    p = sub.add_parser("diff", help="what changes between two bundles (matrix, or recorded requests)",
                       description="Compare two bundles: their matrices cell by cell, or with --input every "
                       "recorded request decided by both.")
    p.add_argument("old", help="the bundle in service (directory or archive)")
    p.add_argument("new", help="the candidate bundle")
    p.add_argument("--now", help="matrix comparison: evaluation instant, ISO 8601 with offset (default: now)")
    p.add_argument("--format", choices=FORMATS, default="text", help="output format (default text)")
    p.add_argument("--fail-on-change", action="store_true", help=f"exit {int(ExitCode.CHANGED)} when anything differs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """0 when compared (4 with --fail-on-change and a difference), 1 for a missing file, 3 for an invalid bundle."""
    as_json = args.format == "json"
    now, code = parse_now(args.now, as_json)
    if code:
        return code
    old = load(args.old, as_json)
    if isinstance(old, int):
        return old
    new = load(args.new, as_json)
    if isinstance(new, int):
        old.close()
        return new
    try:
        changed = _matrices(old, new, now, args.format)
    finally:
        old.close()
        new.close()
    return ExitCode.CHANGED if changed and args.fail_on_change else ExitCode.OK


def _matrices(old: Decider, new: Decider, now: Any, fmt: str) -> int:
    before = matrix(old, now=now)
    after = matrix(new, now=before.now)
    changes = diff_matrices(before, after)
    if fmt == "json":
        print(json.dumps(matrix_diff_json(before, after, changes), indent=2, ensure_ascii=False))
    else:
        print(render(_matrix_table(before, after, changes), fmt))
    return len(changes)


def matrix_diff_json(before: Matrix, after: Matrix, changes: list[CellChange]) -> dict[str, Any]:
    """The JSON contract of ``diff`` without ``--input``."""
    return {
        "old": ref_json(before.bundle),
        "new": ref_json(after.bundle),
        "now": before.now.isoformat(),
        "rows": len(after.rows),
        "changed": len(changes),
        "changes": [{
            "action": c.key[0], "method": c.key[1], "status": c.key[2], "situation": c.key[3],
            "before": c.before.to_json() if c.before else None,
            "after": c.after.to_json() if c.after else None,
        } for c in changes],
    }


def _matrix_table(before: Matrix, after: Matrix, changes: list[CellChange]) -> Table:
    title = (f"{before.bundle.name}@{before.bundle.revision} -> {after.bundle.name}@{after.bundle.revision} "
             f"at {before.now.isoformat()}: {len(changes)} of {len(after.rows)} cells differ")
    t = Table(title, ("", *HEADER))
    for c in changes:
        for mark, row in (("-", c.before), ("+", c.after)):
            if row is not None:
                t.add(c.key[0], [mark, *cells(row)])
    if not changes:
        t.sections.append(("no difference", []))
    return t
