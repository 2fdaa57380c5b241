"""``order-policy decide``: one decision from snapshot files (or many recorded requests),
as a person or a tool reads it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from server import default_bundle
from server.cli import ExitCode, add_format
from server.cli.decide_input import run_input
from server.cli.workbench import fail as _fail
from server.cli.workbench import load, parse_now
from server.errors import PolicyError, SnapshotError
from server.facts import APPOINTMENT_READS, ORDER_READS, parse_json_object, parse_timestamp
from server.model import ACTIONS, Decision, Snapshot
from server.workbench import Capture


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    p = sub.add_parser("decide", help="decide one snapshot (or many recorded requests) with a bundle")
    p.add_argument(
        "--bundle",
        default=None,
        help="bundle directory (default: the bundle shipped with the package, rules/cancellation)",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--order", help="file with Junction's order JSON (- for stdin)")
    source.add_argument(
        "--input",
        help="recorded requests, one decision or error per request in order: "
        "a capture (JSON lines) or a directory of request files",
    )
    p.add_argument(
        "--capture",
        help="append each decided request's replayable projection (no patient data) to this file (- for stdout)",
    )
    p.add_argument("--capture-sample", type=float, default=1.0, help="share of decided requests captured (default 1)")
    p.add_argument("--appointment", help="file with the order's appointment JSON")
    p.add_argument(
        "--now",
        help="evaluation instant, ISO 8601 with offset (default: now; with --input, for requests that recorded none)",
    )
    p.add_argument("--action", choices=ACTIONS, default="cancel_order")
    p.add_argument("--explain", action="store_true", help="include the derived facts and matched rules")
    add_format(p)
    p.set_defaults(func=run)


class _Unreadable(Exception):
    """A snapshot file that cannot be read at all (exit 1, not an invalid snapshot)."""


def _read(path: str, field: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc.__class__.__name__
        raise _Unreadable(f"`--{field}`: cannot read `{path}`: {reason.lower()}") from None
    return parse_json_object(text, field, ORDER_READS if field == "order" else APPOINTMENT_READS)


def run(args: argparse.Namespace) -> int:
    """Decide and print; exit 0 with a decision, 3 for an invalid snapshot or bundle, 1 otherwise.

    With ``--input``: 0 when every request was decided, 3 when any was an error.
    """
    as_json = args.format == "json"
    if args.input is not None and args.appointment:
        _fail(as_json, "usage_error", "--appointment goes with --order; with --input each request carries its own")
        return ExitCode.FAILURE
    args.bundle = args.bundle or str(default_bundle())
    decider = load(args.bundle, as_json)
    if isinstance(decider, int):
        return decider
    try:
        capture = Capture(args.capture, sample=args.capture_sample) if args.capture else None
    except (OSError, ValueError) as exc:
        decider.close()
        _fail(as_json, "capture_error", f"cannot capture to `{args.capture}`: {exc}")
        return ExitCode.FAILURE
    try:
        return _run(args, decider, capture, as_json)
    finally:
        decider.close()
        if capture is not None:
            capture.close()


def _run(args: argparse.Namespace, decider: Any, capture: Capture | None, as_json: bool) -> int:
    if args.input is not None:
        now, code = parse_now(args.now, as_json)
        return code or run_input(args, decider, now, capture)
    try:
        order = _read(args.order, "order")
        appointment = _read(args.appointment, "appointment") if args.appointment else None
        now = parse_timestamp(args.now, "now") if args.now else None
        snapshot = Snapshot(args.action, order, appointment, now)
        decision = decider.decide(snapshot)
    except _Unreadable as exc:
        _fail(as_json, "input_io_error", str(exc))
        return ExitCode.FAILURE
    except SnapshotError as exc:
        _fail(as_json, exc.code, str(exc), field=exc.field)
        return ExitCode.INVALID
    except PolicyError as exc:
        _fail(as_json, exc.code, str(exc))
        return ExitCode.FAILURE
    if capture is not None:
        capture.record(decision, snapshot)
    if as_json:
        print(json.dumps(decision.to_dict(explain=args.explain), indent=2, ensure_ascii=False))
    else:
        print(render(decision, explain=args.explain))
    return ExitCode.OK


def render(decision: Decision, *, explain: bool = False) -> str:
    """The human form of a decision."""
    lines = [
        f"{decision.outcome}  {decision.action} of order {decision.order_id}"
        f"  (bundle {decision.bundle.name}@{decision.bundle.revision}, now {decision.now.isoformat()})"
    ]
    for r in decision.reasons:
        lines.append(f"  reason    {r.code}: {r.message}  [{r.rule_id}]")
    for f in decision.follow_ups:
        endpoint = f"  -> {f.http_method} {f.path}" if f.path else ""
        lines.append(f"  follow-up {f.code}: {f.message}{endpoint}  [{f.rule_id}]")
    if explain:
        lines.append("  facts:")
        lines.extend(f"    {k} = {json.dumps(v)}" for k, v in sorted(decision.facts.items()))
        lines.append(f"  matched rules: {', '.join(decision.matched_rules) or '(none)'}")
    return "\n".join(lines)
