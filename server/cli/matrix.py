"""``order-policy matrix BUNDLE``: what a bundle decides, one row per method, status and situation."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from server import default_bundle
from server.cli import ExitCode
from server.cli.workbench import Stopwatch, Table, fail, load, parse_now, render
from server.errors import SnapshotError
from server.model import ACTIONS
from server.workbench import Matrix, MatrixRow, matrix

FORMATS = ("text", "markdown", "csv", "json", "html")
HEADER = ("method", "status", "situation", "outcome", "reasons", "follow-ups", "rules")


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    p = sub.add_parser(
        "matrix",
        help="what a bundle decides per action, method, status and situation",
        description="Decide a synthetic order for every action x collection method x status "
        "of the bundle's vocabulary (and each appointment or ship-day situation the rules "
        "tell apart) through the engine, and print the table.",
    )
    p.add_argument(
        "bundle", nargs="?", help="bundle directory or archive (default: the bundle shipped with the package)"
    )
    p.add_argument("--action", action="append", choices=ACTIONS, help="only this action (repeatable)")
    p.add_argument("--now", help="evaluation instant, ISO 8601 with offset (default: now)")
    p.add_argument("--format", choices=FORMATS, default="text", help="output format (default text)")
    p.set_defaults(func=run)


def cells(row: MatrixRow) -> list[str]:
    """A row's cells for a table (the error field stands in for reasons on an ERROR row)."""
    reasons = " ".join(row.reasons) if row.error is None else f"invalid `{row.error.field}`"
    return [row.method, row.status, row.situation, row.outcome, reasons, " ".join(row.follow_ups), " ".join(row.rules)]


def table(m: Matrix) -> Table:
    t = Table(f"bundle {m.bundle.name}@{m.bundle.revision} decided at {m.now.isoformat()}", HEADER)
    for row in m.rows:
        t.add(row.action, cells(row))
    return t


def run(args: argparse.Namespace) -> int:
    """Print the matrix; 0 when printed, 1 for a missing bundle, 3 for an invalid bundle or `--now`."""
    as_json = args.format == "json"
    now, code = parse_now(args.now, as_json)
    if code:
        return code
    decider = load(args.bundle or str(default_bundle()), as_json)
    if isinstance(decider, int):
        return decider
    try:
        watch = Stopwatch()
        m = matrix(decider, now=now, actions=args.action)
    except SnapshotError as exc:
        fail(as_json, exc.code, str(exc), field=exc.field)
        return ExitCode.INVALID
    finally:
        decider.close()
    if as_json:
        print(json.dumps(m.to_json(), indent=2, ensure_ascii=False))
    else:
        print(render(table(m), args.format))
    print(f"{len(m.rows)} rows {watch.rate(len(m.rows), 'rows')}", file=sys.stderr)
    return ExitCode.OK
