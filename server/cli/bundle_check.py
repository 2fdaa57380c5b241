"""``order-policy check`` (validation and coverage) and ``order-policy test`` (the bundle's cases)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from server import default_bundle
from server.bundle import load_bundle
from server.cases import case_errors, load_cases, run_cases
from server.cli import ExitCode, add_format, exit_code_for
from server.decide import Decider
from server.errors import ErrorList, PolicyError
from server.validate import coverage_errors, validate, warnings


def add_parser(sub: Any) -> None:
    """Register ``check`` and ``test``."""
    p = sub.add_parser("check", help="validate a bundle and report its coverage")
    p.add_argument("bundle", nargs="?", help="bundle directory (default: the bundle shipped with the package)")
    add_format(p)
    p.set_defaults(func=run_check)
    t = sub.add_parser("test", help="run a bundle's own test cases")
    t.add_argument("bundle", nargs="?", help="bundle directory (default: the bundle shipped with the package)")
    t.add_argument("-k", dest="pattern", default="", help="only cases whose name contains this text")
    add_format(t)
    t.set_defaults(func=run_test)


def _case_file_errors(path: str, bundle: Any) -> list[PolicyError]:
    """Errors of the bundle's case files (``tests/*.yaml``); their codes and rule ids are
    checked against ``bundle`` when it loaded."""
    if not Path(path).is_dir():
        return []
    try:
        cases = load_cases(path)
    except ErrorList as exc:
        return list(exc.errors)
    return case_errors(bundle, cases) if bundle is not None else []


def check_bundle(path: str | Path, *, cases: bool = False) -> tuple[Decider | None, list[PolicyError], dict[str, Any]]:
    """What ``check`` reports: (the decider when the bundle compiles, every error, the coverage report).

    ``cases``: check the case files too, and add ``report["warnings"]``. The caller closes
    the decider.
    """
    path = str(path)
    try:
        bundle = load_bundle(path)
    except ErrorList as exc:
        return None, exc.errors + (_case_file_errors(path, None) if cases else []), {}
    errors = validate(bundle) + (_case_file_errors(path, bundle) if cases else [])
    if errors:
        return None, errors, {}
    try:
        decider = Decider(bundle)
    except PolicyError as exc:
        return None, [exc], {}
    errors = coverage_errors(bundle, decider)
    v = bundle.vocabulary
    report = {
        "bundle": {"name": bundle.name, "revision": bundle.revision, "digest": bundle.digest},
        "policies": {a: len(p.rules) for a, p in sorted(bundle.policies.items())},
        "methods": {m: len(s) for m, s in sorted(v.methods.items())},
        "aliases": len(v.aliases),
        "statuses_checked": len(v.all_statuses()) + len(v.top_statuses) * len(v.methods),
        "warnings": warnings(bundle, decider) if cases else [],
    }
    return decider, errors, report


def run_check(args: argparse.Namespace) -> int:
    """Exit 0 when the bundle and its case files are valid and covered (warnings allowed), else 1 or 3."""
    args.bundle = args.bundle or str(default_bundle())
    decider, errors, report = check_bundle(args.bundle, cases=True)
    if decider is not None:
        decider.close()
    warned: list[PolicyError] = report.pop("warnings", []) if not errors else []
    if args.format == "json":
        print(
            json.dumps(
                {
                    "valid": not errors,
                    "errors": [e.to_dict() for e in errors],
                    "warnings": [w.to_dict() for w in warned],
                    **report,
                },
                indent=2,
            )
        )
    else:
        for kind, found in (("error", errors), ("warning", warned)):
            for e in found:
                hint = f"\n    help: {e.hint}" if e.hint else ""
                print(f"{str(e.location) or args.bundle}: {kind}[{e.code}]: {e.message}{hint}")
        if not errors:
            b = report["bundle"]
            rules = ", ".join(f"{a}: {n} rules" for a, n in report["policies"].items())
            print(
                f"ok: bundle {b['name']}@{b['revision']} is valid ({rules}); every one of "
                f"{report['statuses_checked']} known statuses and top statuses of "
                f"{len(report['methods'])} methods reaches a decision"
            )
        else:
            print(f"{len(errors)} error(s)", file=sys.stderr)
    return exit_code_for(errors) if errors else ExitCode.OK


def run_test(args: argparse.Namespace) -> int:
    """Exit 0 when every case passes, 2 when any fails, 3 when the bundle or cases are invalid."""
    args.bundle = args.bundle or str(default_bundle())
    decider, errors, _ = check_bundle(args.bundle)
    if decider is None or errors:
        for e in errors:
            print(f"{str(e.location) or args.bundle}: error[{e.code}]: {e.message}", file=sys.stderr)
        return exit_code_for(errors)
    try:
        cases = [c for c in load_cases(args.bundle) if args.pattern in c.name]
    except ErrorList as exc:
        for e in exc.errors:
            print(f"{e.location}: error[{e.code}]: {e.message}", file=sys.stderr)
        decider.close()
        return ExitCode.INVALID
    results = run_cases(decider, cases)
    decider.close()
    failed = [r for r in results if not r.passed]
    if args.format == "json":
        print(
            json.dumps(
                {
                    "passed": len(results) - len(failed),
                    "failed": len(failed),
                    "failures": [
                        {"case": r.case.name, "location": str(r.case.location), "differences": r.differences}
                        for r in failed
                    ],
                },
                indent=2,
            )
        )
    else:
        for r in failed:
            print(f"FAIL {r.case.name} ({r.case.location})")
            for d in r.differences:
                print(f"     {d}")
        print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return ExitCode.TESTS_FAILED if failed else ExitCode.OK
