"""The ``order-policy`` command line: one module per subcommand.

Exit codes (Cedar style): 0 OK, 1 failure (usage, I/O, internal), 2 a bundle's
own tests failed, 3 invalid input (an invalid snapshot or an invalid bundle), 4 a
difference found by ``diff --fail-on-change``.
Every command takes ``--format human|json``; ``--format json`` output is a
contract other tools use.
"""

from __future__ import annotations

import argparse
import enum
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["ExitCode", "main"]


class ExitCode(enum.IntEnum):
    """What a command's exit status means."""

    OK = 0
    FAILURE = 1
    TESTS_FAILED = 2
    INVALID = 3
    CHANGED = 4  # `diff --fail-on-change` found a difference


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    from server.cli import admin, bundle_archive, bundle_check, decide, diff, health, matrix, serve

    parser = argparse.ArgumentParser(prog="order-policy", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action=_VersionAction, help="print the version, the bundle format "
                        "version and the proto package, and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (decide, bundle_check, bundle_archive, matrix, diff, serve, health, admin):
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code."""
    try:
        parser = build_parser()
    except ImportError as exc:
        # A broken install (e.g. the engine built without its Python 3.13 fix): one line, no traceback.
        print(f"error: {str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__}", file=sys.stderr)
        return int(ExitCode.FAILURE)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return int(ExitCode.FAILURE)
    except BrokenPipeError:
        sys.stderr.close()
        return int(ExitCode.FAILURE)


def version_text() -> str:
    """``order-policy 0.1.0 (bundle format 1, proto package orderpolicy.v1)``."""
    import json
    from importlib import resources

    from server import __version__

    schema = json.loads((resources.files("server") / "schemas" / "manifest.schema.json").read_text("utf-8"))
    bundle_format = schema["properties"]["format_version"]["const"]
    try:
        from server._gen.orderpolicy.v1 import order_policy_pb2
    except ImportError:
        package = "missing: the generated gRPC code is not installed (`make gen` in a checkout)"
    else:
        package = order_policy_pb2.DESCRIPTOR.package
    return f"order-policy {__version__} (bundle format {bundle_format}, proto package {package})"


class _VersionAction(argparse.Action):
    """``--version``, computed only when asked (it imports the generated code)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        print(version_text())
        parser.exit()


def add_format(parser: argparse.ArgumentParser) -> None:
    """The shared ``--format human|json`` option."""
    parser.add_argument("--format", choices=("human", "json"), default="human", help="output format")
