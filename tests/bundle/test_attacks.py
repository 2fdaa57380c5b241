"""Hostile archives are refused fast, in bounded memory, while the active revision keeps serving.

Each attack runs in a child process (``tests.support.hostile``) with an address-space cap,
so a regression fails the test instead of exhausting the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.bundles import ROOT

EXPECTED = {  # attack -> refusal code (without and with a verification key)
    "alias_bomb": ("bundle_parse_error", "bundle_unsigned"),
    "zero_members": ("bundle_too_large", "bundle_too_large"),
    "long_name": ("bundle_too_large", "bundle_too_large"),
    "directories": ("bundle_too_large", "bundle_too_large"),
    "big_yaml": ("bundle_too_large", "bundle_too_large"),
    "many_nodes": ("bundle_too_large", "bundle_unsigned"),
}


def _run(keyed: bool) -> dict[str, dict[str, object]]:
    cmd = [sys.executable, "-m", "tests.support.hostile", *EXPECTED] + (["--keyed"] if keyed else [])
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    results = {}
    for line in proc.stdout.splitlines():
        record = json.loads(line)
        results[record["attack"]] = record
    assert results, f"the attack runner failed: {proc.stderr[-2000:]}"
    return results


@pytest.fixture(scope="module")
def outcomes() -> dict[bool, dict[str, dict[str, object]]]:
    return {False: _run(False), True: _run(True)}


@pytest.mark.parametrize("keyed", [False, True], ids=["unkeyed", "keyed"])
@pytest.mark.parametrize("attack", sorted(EXPECTED))
def test_a_hostile_archive_is_refused_in_under_2s_and_50mb(outcomes, attack: str, keyed: bool) -> None:
    """Alias bomb, zero members, a huge long-name header, 300k directories, big YAML: refused cheaply."""
    result = outcomes[keyed].get(attack)
    assert result is not None, f"the runner died on `{attack}`"
    assert result["code"] == EXPECTED[attack][keyed]
    assert result["seconds"] < 2.0, result
    assert result["rss_growth_kib"] < 50 * 1024, result
    assert result["serving"] == result["good_revision"]
    assert result["decided"]
