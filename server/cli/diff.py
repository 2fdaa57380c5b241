"""``order-policy diff OLD NEW``: what changes between two bundles, before shipping.

Without ``--input`` the two matrices are compared cell by cell. With ``--input``
every recorded request is decided by both bundles at its own ``now`` and the
differences are grouped by transition.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from server.cli import ExitCode
from server.cli.matrix import HEADER, cells
from server.cli.workbench import Progress, Stopwatch, Table, fail, load, parse_now, render
from server.decide import Decider
from server.model import BundleRef
from server.workbench import CellChange, Impact, Matrix, diff_matrices, matrix, read_inputs, replay
from server.workbench.inputs import input_files
from server.workbench.matrix import ref_json

FORMATS = ("text", "markdown", "json")


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    p = sub.add_parser(
        "diff",
        help="what changes between two bundles (matrix, or recorded requests)",
        description="Compare two bundles: their matrices cell by cell, or with --input every "
        "recorded request decided by both.",
    )
    p.add_argument("old", help="the bundle in service (directory or archive)")
    p.add_argument("new", help="the candidate bundle")
    p.add_argument("--input", help="recorded requests: a capture (JSON lines) or a directory of request files")
    p.add_argument(
        "--now",
        help="evaluation instant, ISO 8601 with offset, of the matrices and of recorded "
        "requests without one (default: now)",
    )
    p.add_argument(
        "--examples",
        type=int,
        default=5,
        help="request ids shown per group in text and markdown (default 5; JSON lists all)",
    )
    p.add_argument("--format", choices=FORMATS, default="text", help="output format (default text)")
    p.add_argument("--fail-on-change", action="store_true", help=f"exit {int(ExitCode.CHANGED)} when anything differs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """0 when compared, 4 with --fail-on-change and a difference, 1 for a missing or unreadable file,
    3 for an invalid bundle or `--now`, or malformed input lines (each reported; the rest is compared)."""
    as_json = args.format == "json"
    if args.examples < 0:
        fail(as_json, "usage_error", f"--examples must be 0 or more, not `{args.examples}`")
        return ExitCode.FAILURE
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
        if args.input is None:
            changed, invalid = _matrices(old, new, now, args.format), 0
        else:
            outcome = _replay(old, new, args.input, now, args.format, args.examples)
            if isinstance(outcome, ExitCode):
                return outcome
            changed, invalid = outcome
    finally:
        old.close()
        new.close()
    if changed and args.fail_on_change:
        return ExitCode.CHANGED
    return ExitCode.INVALID if invalid else ExitCode.OK


def _matrices(old: Decider, new: Decider, now: Any, fmt: str) -> int:
    before = matrix(old, now=now, compare_with=[new])
    after = matrix(new, now=before.now, compare_with=[old])
    changes = diff_matrices(before, after)
    if fmt == "json":
        print(json.dumps(matrix_diff_json(before, after, changes), indent=2, ensure_ascii=False))
    else:
        print(render(_matrix_table(before, after, changes), fmt))
    return len(changes)


def _replay(old: Decider, new: Decider, path: str, now: Any, fmt: str, examples: int) -> tuple[int, int] | ExitCode:
    try:
        files = input_files(path)
        total = sum(f.stat().st_size for f in files)
    except OSError as exc:
        fail(fmt == "json", "input_io_error", f"cannot read input `{path}`: {exc.strerror or exc}")
        return ExitCode.FAILURE
    progress = Progress("diff", total)
    watch = Stopwatch()
    try:
        impact = replay(old, new, progress.track(read_inputs(path)), now=now)
    except OSError as exc:
        progress.close()
        fail(fmt == "json", "input_io_error", f"cannot read input `{path}`: {exc.strerror or exc}")
        return ExitCode.FAILURE
    progress.close()
    for error in impact.input_errors:
        print(f"error: {error}", file=sys.stderr)
    if impact.errors > len(impact.input_errors):
        print(f"error: ... {impact.errors - len(impact.input_errors)} more input errors", file=sys.stderr)
    if fmt == "json":
        print(json.dumps(impact.to_json(old.ref, new.ref), indent=2, ensure_ascii=False))
    else:
        print(render(_impact_table(old.ref, new.ref, impact, examples), fmt))
    print(f"{impact.inputs} inputs decided by both bundles {watch.rate(impact.inputs, 'inputs')}", file=sys.stderr)
    return impact.changed, impact.errors


def _describe(answer: dict[str, Any]) -> str:
    if "error" in answer:
        return f"error {answer['error']} on `{answer['field']}`" if answer.get("field") else f"error {answer['error']}"
    text = f"{answer['outcome']} {' '.join(answer['reasons'])}"
    return text + (f" + {' '.join(answer['follow_ups'])}" if answer["follow_ups"] else "")


def _impact_table(old: BundleRef, new: BundleRef, impact: Impact, examples: int) -> Table:
    share = impact.changed / impact.inputs if impact.inputs else 0.0
    title = (
        f"{old.name}@{old.revision} -> {new.name}@{new.revision}: {impact.changed} of {impact.inputs} "
        f"requests change ({share:.2%})" + (f", {impact.errors} input errors" if impact.errors else "")
    )
    t = Table(title, ("before", "after", "requests", "share", "examples"))
    for g in impact.groups:
        shown = g.request_ids[:examples]
        more = f" (+{g.count - len(shown)})" if g.count > len(shown) else ""
        t.add(
            "changes",
            [
                _describe(g.before),
                _describe(g.after),
                str(g.count),
                f"{g.count / impact.inputs:.2%}",
                " ".join(shown) + more,
            ],
        )
    if not impact.groups:
        t.sections.append(("no difference", []))
    return t


def matrix_diff_json(before: Matrix, after: Matrix, changes: list[CellChange]) -> dict[str, Any]:
    """The JSON contract of ``diff`` without ``--input``."""
    return {
        "old": ref_json(before.bundle),
        "new": ref_json(after.bundle),
        "now": before.now.isoformat(),
        "rows": len(after.rows),
        "changed": len(changes),
        "changes": [
            {
                "action": c.key[0],
                "method": c.key[1],
                "status": c.key[2],
                "situation": c.key[3],
                "before": c.before.to_json() if c.before else None,
                "after": c.after.to_json() if c.after else None,
            }
            for c in changes
        ],
    }


def _matrix_table(before: Matrix, after: Matrix, changes: list[CellChange]) -> Table:
    title = (
        f"{before.bundle.name}@{before.bundle.revision} -> {after.bundle.name}@{after.bundle.revision} "
        f"at {before.now.isoformat()}: {len(changes)} of {len(after.rows)} cells differ"
    )
    t = Table(title, ("", *HEADER))
    for c in changes:
        for mark, row in (("-", c.before), ("+", c.after)):
            if row is not None:
                t.add(c.key[0], [mark, *cells(row)])
    if not changes:
        t.sections.append(("no difference", []))
    return t
