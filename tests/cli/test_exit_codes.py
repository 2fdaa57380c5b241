"""Exit codes: one table (the README's), the same for every command.

0 OK; 1 a usage error, a file or bundle that does not exist or cannot be read, a server
that cannot be reached; 2 a bundle's own cases failed; 3 an invalid bundle, snapshot or
``--now``; 4 ``diff --fail-on-change`` found a difference.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from server.cli import ExitCode, main
from tests.support.bundles import FIXTURE_BUNDLE, ROOT, bundle_variant, set_value
from tests.support.servers import free_port

EXAMPLES = ROOT / "docs" / "examples"
ORDER = str(EXAMPLES / "at-home-order.json")
APPOINTMENT = str(EXAMPLES / "at-home-appointment.json")
NOW = "2026-03-12T12:00:00Z"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The fixture bundle, an invalid one, one whose cases fail, and one that decides differently."""
    tmp = tmp_path_factory.mktemp("exit-codes")
    invalid = bundle_variant(tmp / "invalid")
    (invalid / "data" / "catalogue.yaml").write_text("reasons: [unclosed\n")
    failing = bundle_variant(tmp / "failing", revision="failing")
    set_value(failing / "data" / "settings.yaml", ["params", "refund_window"], "48h")
    changed = bundle_variant(tmp / "changed", revision="changed")
    set_value(changed / "data" / "settings.yaml", ["params", "refund_window"], "48h")
    (changed / "tests" / "refunds.yaml").unlink()  # its cases pin the 24 h window
    return {
        "ok": str(FIXTURE_BUNDLE),
        "invalid": str(invalid),
        "failing": str(failing),
        "changed": str(changed),
        "missing": str(tmp / "does-not-exist"),
        "archive": str(tmp / "out.tar.gz"),
    }


def run(argv: list[str], bundles: dict[str, str]) -> int:
    return main([part.format(**bundles) for part in argv])


CASES = [
    # usage errors: a missing argument, an unknown flag, an unknown command
    (["decide"], ExitCode.FAILURE),
    (["check", "{ok}", "--bogus"], ExitCode.FAILURE),
    (["matrix", "{ok}", "--format", "yaml"], ExitCode.FAILURE),
    (["diff", "{ok}"], ExitCode.FAILURE),
    (["bundle", "build", "{ok}"], ExitCode.FAILURE),
    (["bundle", "verify", "{archive}"], ExitCode.FAILURE),
    (["admin", "activate"], ExitCode.FAILURE),
    (["health", "--timeout", "soon"], ExitCode.FAILURE),
    (["serve", "--port", "many"], ExitCode.FAILURE),
    (["no-such-command"], ExitCode.FAILURE),
    # a bundle or file that does not exist
    (["check", "{missing}"], ExitCode.FAILURE),
    (["test", "{missing}"], ExitCode.FAILURE),
    (["decide", "--bundle", "{missing}", "--order", ORDER], ExitCode.FAILURE),
    (["decide", "--bundle", "{ok}", "--order", "{missing}"], ExitCode.FAILURE),
    (["decide", "--bundle", "{ok}", "--order", ORDER, "--appointment", "{missing}"], ExitCode.FAILURE),
    (["matrix", "{missing}"], ExitCode.FAILURE),
    (["diff", "{ok}", "{missing}"], ExitCode.FAILURE),
    (["bundle", "build", "{missing}", "-o", "{archive}"], ExitCode.FAILURE),
    (["bundle", "verify", "{missing}", "--key", "{missing}"], ExitCode.FAILURE),
    # an invalid bundle, snapshot or --now
    (["check", "{invalid}"], ExitCode.INVALID),
    (["test", "{invalid}"], ExitCode.INVALID),
    (["decide", "--bundle", "{invalid}", "--order", ORDER], ExitCode.INVALID),
    (["decide", "--bundle", "{ok}", "--order", ORDER, "--now", "yesterday"], ExitCode.INVALID),
    (
        ["decide", "--bundle", "{ok}", "--order", ORDER, "--action", "cancel_appointment", "--now", NOW],
        ExitCode.INVALID,
    ),  # cancel_appointment without the appointment: an invalid snapshot
    (["matrix", "{invalid}"], ExitCode.INVALID),
    (["matrix", "{ok}", "--now", "noon"], ExitCode.INVALID),
    (["diff", "{ok}", "{invalid}"], ExitCode.INVALID),
    (["bundle", "build", "{invalid}", "-o", "{archive}"], ExitCode.INVALID),
    # a bundle's own cases failed
    (["test", "{failing}"], ExitCode.TESTS_FAILED),
    (["bundle", "build", "{failing}", "-o", "{archive}"], ExitCode.TESTS_FAILED),
    # a difference with --fail-on-change
    (["diff", "{ok}", "{changed}", "--fail-on-change"], ExitCode.CHANGED),
    # success
    (["check", "{ok}"], ExitCode.OK),
    (["test", "{ok}"], ExitCode.OK),
    (["decide", "--bundle", "{ok}", "--order", ORDER, "--appointment", APPOINTMENT, "--now", NOW], ExitCode.OK),
    (["diff", "{ok}", "{changed}"], ExitCode.OK),
    (["--version"], ExitCode.OK),
    (["check", "--help"], ExitCode.OK),
]


@pytest.mark.parametrize(("argv", "code"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_every_command_exits_with_the_documented_code(argv: list[str], code: ExitCode, bundles, capsys) -> None:
    """Each command, each class of outcome: the code of the README's table, and a message."""
    assert run(argv, bundles) == code
    out = capsys.readouterr()
    if code != ExitCode.OK:
        assert (out.err + out.out).strip(), "a non-zero exit says why"


def test_a_server_that_cannot_be_reached_exits_1(capsys) -> None:
    """health and admin against nothing listening: 1."""
    address = f"127.0.0.1:{free_port()}"
    assert main(["health", "--address", address, "--timeout", "1"]) == ExitCode.FAILURE
    assert main(["admin", "status", "--address", address]) == ExitCode.FAILURE


def test_serve_exits_1_for_a_missing_bundle_and_3_for_an_invalid_one(bundles) -> None:
    """serve (a real process): a bundle that does not exist is 1, one with errors 3."""
    code = "import sys; from server.cli import main; sys.exit(main(sys.argv[1:]))"
    for bundle, expected in ((bundles["missing"], 1), (bundles["invalid"], 3)):
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                code,
                "serve",
                "--bundle",
                bundle,
                "--host",
                "127.0.0.1",
                "--port",
                str(free_port()),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        assert proc.returncode == expected, proc.stderr[-2000:]
        assert Path(bundle).name in proc.stderr
