"""The ``order-policy`` command line: one module per subcommand.

Exit codes, the same for every command (the README's table): 0 OK; 1 failure: a usage
error, a file or bundle that does not exist or cannot be read, a server that cannot be
reached or started, an internal error; 2 a bundle's own cases failed; 3 invalid input: a
bundle with errors, an invalid snapshot or ``--now``; 4 a difference found by
``diff --fail-on-change``.
Every command takes ``--format human|json``; ``--format json`` output is a
contract other tools use.
"""

from __future__ import annotations

import argparse
import enum
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["ExitCode", "exit_code_for", "main"]


class ExitCode(enum.IntEnum):
    """What a command's exit status means."""

    OK = 0
    FAILURE = 1
    TESTS_FAILED = 2
    INVALID = 3
    CHANGED = 4  # `diff --fail-on-change` found a difference


#: Error codes meaning a file could not be read at all (exit 1), not that it is invalid (3).
_IO_CODES = frozenset({"bundle_io_error"})
#: Error codes meaning only that a bundle's own cases failed (exit 2).
_TEST_CODES = frozenset({"bundle_test_failed"})


def exit_code_for(errors: Sequence[Any]) -> ExitCode:
    """The exit code for a bundle's load errors: 1 when nothing could be read, 2 when only
    its cases failed, 3 otherwise."""
    codes = {getattr(e, "code", "") for e in errors}
    if codes and codes <= _IO_CODES:
        return ExitCode.FAILURE
    if codes and codes <= _TEST_CODES:
        return ExitCode.TESTS_FAILED
    return ExitCode.INVALID


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors exiting 1 (argparse's own 2 means failed cases here)."""

    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        self.exit(int(ExitCode.FAILURE), f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    from server.cli import admin, bundle_archive, bundle_check, console, decide, diff, health, matrix, serve

    parser = _Parser(prog="order-policy", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="print the version, the bundle format version and the proto package, and exit",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (decide, bundle_check, bundle_archive, matrix, diff, serve, console, health, admin):
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
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, a usage error
        return exc.code if isinstance(exc.code, int) else int(ExitCode.FAILURE)
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

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(version_text())
        parser.exit()


def add_format(parser: argparse.ArgumentParser) -> None:
    """The shared ``--format human|json`` option."""
    parser.add_argument("--format", choices=("human", "json"), default="human", help="output format")
