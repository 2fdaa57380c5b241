"""Write a bundle's own test cases as JSON for the client test suites (which never import the server).

Usage: ``python -m tests.clients.export_cases BUNDLE_DIR OUT.json``. Each case keeps what a caller
sends (``action``, ``now`` text, ``order``/``appointment`` as JSON data or raw JSON text) and what
the bundle expects (``expect``: ``outcome``, ``reasons``, ``follow_ups`` and optionally
``rules``, ``messages``, ``paths``; or ``error.field``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from server.cases import load_cases


def export(bundle: Path) -> list[dict[str, Any]]:
    return [
        {
            "name": case.name,
            "action": case.action,
            "now": case.now_text,
            "order": case.order,
            "order_json": case.order_json,
            "appointment": case.appointment,
            "appointment_json": case.appointment_json,
            "expect": case.expect,
        }
        for case in load_cases(bundle)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.clients.export_cases", description=__doc__)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    cases = export(args.bundle)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(cases, ensure_ascii=False, default=str))
    print(f"wrote {len(cases)} cases of {args.bundle} to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
