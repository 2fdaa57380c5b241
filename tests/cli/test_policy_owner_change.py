"""A policy owner's change to a live bundle: edit data, a message and the revision, update
only that bundle's own cases, and `order-policy check` and `order-policy test` pass.

Runs on a copy of every bundle under ``rules/`` and takes nothing from its contents as a
literal: the duration params are doubled, the first reason's message is reworded and
the revision bumped, whatever they are today. This is the promise that lets a policy
owner change ``rules/`` without touching Python or a golden: the engineering suite runs
on ``tests/fixtures``, and a live bundle is held only to its own cases.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from server.cases import load_cases, run_case
from server.registry import build_decider
from tests.support.bundles import LIVE_BUNDLES, ROOT, copy_bundle, edit_yaml, read_yaml, set_revision

DURATION = re.compile(r"^(\d+)([smhd])$")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from server.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


def change_like_a_policy_owner(bundle: Path) -> list[str]:
    """Double every duration param, reword the first reason's message, bump the revision."""
    changed: list[str] = []

    def settings(data: dict[str, Any]) -> None:
        for name, value in (data.get("params") or {}).items():
            match = DURATION.match(str(value))
            if match:
                data["params"][name] = f"{int(match.group(1)) * 2}{match.group(2)}"
                changed.append(f"param {name}: {value} -> {data['params'][name]}")

    def catalogue(data: dict[str, Any]) -> None:
        code = next(iter(data["reasons"]))
        data["reasons"][code]["message"] = "(reworded) " + data["reasons"][code]["message"]
        changed.append(f"message of {code}")

    edit_yaml(bundle / "data" / "settings.yaml", settings)
    edit_yaml(bundle / "data" / "catalogue.yaml", catalogue)
    revision = str(read_yaml(bundle / "manifest.yaml")["revision"])
    set_revision(bundle, revision + "-owner-change")
    changed.append("revision")
    return changed


def update_own_cases(bundle: Path) -> int:
    """What the owner does next: set each failing case's expectation to the new decision
    (as YAML data, in the case file). Returns how many cases were updated."""
    decider = build_decider(bundle)
    updates: dict[str, dict[int, dict[str, Any]]] = {}
    try:
        for case in load_cases(bundle):
            result = run_case(decider, case)
            if result.passed:
                continue
            decision = result.decision
            assert decision is not None, f"{case.name}: {result.differences}"
            expect: dict[str, Any] = {
                "outcome": decision.outcome,
                "reasons": [r.code for r in decision.reasons],
                "follow_ups": [f.code for f in decision.follow_ups],
            }
            if "rules" in case.expect:
                expect["rules"] = sorted(
                    {r.rule_id for r in decision.reasons} | {f.rule_id for f in decision.follow_ups}
                )
            if "messages" in case.expect:
                expect["messages"] = [r.message for r in decision.reasons]
            if "paths" in case.expect:
                expect["paths"] = [f.path for f in decision.follow_ups if f.path]
            updates.setdefault(case.location.file, {})[case.name] = expect
    finally:
        decider.close()

    for file, expectations in updates.items():

        def apply(data: dict[str, Any], expectations: dict[str, Any] = expectations) -> None:
            for raw in data["cases"]:
                if raw["name"] in expectations:
                    raw["expect"] = expectations[raw["name"]]

        edit_yaml(bundle / file, apply)
    return sum(len(e) for e in updates.values())


@pytest.mark.slow
@pytest.mark.parametrize("live", LIVE_BUNDLES, ids=lambda p: p.name)
def test_a_live_bundle_changed_with_its_own_cases_passes_check_and_test(tmp_path: Path, live: Path) -> None:
    """Edit a copy of the live bundle as its owner would; only its cases need updating."""
    bundle = copy_bundle(tmp_path / live.name, live)
    before = json.loads(cli("test", str(bundle), "--format", "json").stdout)
    assert before["failed"] == 0

    changed = change_like_a_policy_owner(bundle)
    checked = cli("check", str(bundle))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "-owner-change" in checked.stdout

    stale = cli("test", str(bundle), "--format", "json")
    report = json.loads(stale.stdout)
    # Every case that pinned the old data now fails, and says why; the rest still pass.
    assert stale.returncode == (2 if report["failed"] else 0)
    assert all(f["differences"] for f in report["failures"])

    updated = update_own_cases(bundle)
    assert updated == report["failed"], changed
    passed = cli("test", str(bundle), "--format", "json")
    assert passed.returncode == 0, passed.stdout
    assert json.loads(passed.stdout) == {"passed": before["passed"], "failed": 0, "failures": []}
