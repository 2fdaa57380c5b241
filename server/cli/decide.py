"""``order-policy decide``: one decision from snapshot files, as a person or a tool reads it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from server import default_bundle
from server.cli import ExitCode, add_format
from server.cli.workbench import load
from server.errors import PolicyError, SnapshotError
from server.facts import parse_json_object, parse_timestamp
from server.model import ACTIONS, Decision, Snapshot


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    p = sub.add_parser("decide", help="decide one snapshot with a bundle")
    p.add_argument("--bundle", default=None, help="bundle directory (default: the bundle shipped with "
                   "the package, rules/cancellation)")
    p.add_argument("--order", required=True, help="file with Junction's order JSON (- for stdin)")
    p.add_argument("--appointment", help="file with the order's appointment JSON")
    p.add_argument("--now", help="evaluation instant, ISO 8601 with offset (default: now)")
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
    return parse_json_object(text, field)


def run(args: argparse.Namespace) -> int:
    """Decide and print; exit 0 with a decision, 3 for an invalid snapshot or bundle, 1 otherwise."""
    as_json = args.format == "json"
    args.bundle = args.bundle or str(default_bundle())
    decider = load(args.bundle, as_json)
    if isinstance(decider, int):
        return decider
    try:
        order = _read(args.order, "order")
        appointment = _read(args.appointment, "appointment") if args.appointment else None
        now = parse_timestamp(args.now, "now") if args.now else None
        decision = decider.decide(Snapshot(args.action, order, appointment, now))
    except _Unreadable as exc:
        _fail(as_json, "input_io_error", str(exc))
        return ExitCode.FAILURE
    except SnapshotError as exc:
        _fail(as_json, exc.code, str(exc), field=exc.field)
        return ExitCode.INVALID
    except PolicyError as exc:
        _fail(as_json, exc.code, str(exc))
        return ExitCode.FAILURE
    finally:
        decider.close()
    if as_json:
        print(json.dumps(decision.to_dict(explain=args.explain), indent=2, ensure_ascii=False))
    else:
        print(render(decision, explain=args.explain))
    return ExitCode.OK


def _fail(as_json: bool, code: str, message: str, **extra: Any) -> None:
    if as_json:
        print(json.dumps({"error": {"code": code, "message": message, **extra}}, indent=2, ensure_ascii=False))
    else:
        print(f"error: {message}", file=sys.stderr)


def render(decision: Decision, *, explain: bool = False) -> str:
    """The human form of a decision."""
    lines = [f"{decision.outcome}  {decision.action} of order {decision.order_id}"
             f"  (bundle {decision.bundle.name}@{decision.bundle.revision}, now {decision.now.isoformat()})"]
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
