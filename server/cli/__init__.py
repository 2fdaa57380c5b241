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
    from server.cli import admin, bundle_archive, bundle_check, console, decide, diff, health, matrix, serve

    parser = argparse.ArgumentParser(prog="order-policy", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (decide, bundle_check, bundle_archive, matrix, diff, serve, console, health, admin):
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return int(ExitCode.FAILURE)
    except BrokenPipeError:
        sys.stderr.close()
        return int(ExitCode.FAILURE)


def add_format(parser: argparse.ArgumentParser) -> None:
    """The shared ``--format human|json`` option."""
    parser.add_argument("--format", choices=("human", "json"), default="human", help="output format")
