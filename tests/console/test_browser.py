"""The console in a real browser: headless Chromium (Debian's package) driven by Playwright.

Run with ``make test-browser`` (it installs what it needs). Every expectation is
computed in this process through the same decide path (``build_decider``, the
workbench's ``matrix``/``diff_matrices``, ``rule_source``), never taken from
literals of a bundle. Screenshots of each page go to ``build/test-output/console``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.cases import load_cases
from server.errors import SnapshotError
from server.facts import parse_json_object
from server.registry import build_decider
from server.workbench import diff_matrices, matrix, rule_source
from tests.console.support import candidate_with_refund_window
from tests.support.bundles import ROOT, copy_bundle
from tests.support.servers import serve_command

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OUTPUT = Path(os.environ.get("CONSOLE_TEST_OUTPUT", ROOT / "build" / "test-output" / "console"))
NOW = "2026-03-10T15:00:00+00:00"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("browser")
    bundle = copy_bundle(root / "bundle")
    return bundle, candidate_with_refund_window(bundle, root / "candidate", "48h")


@pytest.fixture(scope="module")
def deciders(bundles: tuple[Path, Path]) -> Iterator[tuple[Any, Any]]:
    old, new = build_decider(bundles[0]), build_decider(bundles[1])
    yield old, new
    old.close()
    new.close()


@pytest.fixture(scope="module")
def console_url(bundles: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real ``order-policy console`` command on a free loopback port (port 0)."""
    log = tmp_path_factory.mktemp("console-log") / "console.log"
    with open(log, "w") as err:
        process = subprocess.Popen(
            serve_command("console", "--bundle", str(bundles[0]), "--candidate", str(bundles[1]), "--port", "0"),
            cwd=ROOT,
            text=True,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        found = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        assert found, f"no address in {line!r}; log: {log.read_text()}"
        yield found.group(1)
    finally:
        process.terminate()
        process.communicate(timeout=20)
    assert process.returncode == 0, log.read_text()
    assert "Traceback" not in log.read_text()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run `make browser-deps`"
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser: Any, console_url: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh page that records console errors and any request leaving the console."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    tab = context.new_page()
    problems: list[str] = []
    tab.on(
        "console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None
    )
    tab.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    origin = console_url.rstrip("/")

    def only_the_console(route: Any) -> None:
        if route.request.url.startswith(origin):
            route.continue_()
        else:
            problems.append(f"request outside the console: {route.request.url}")
            route.abort()

    tab.route("**/*", only_the_console)
    tab.base = console_url
    yield tab
    context.close()
    assert problems == [], problems


def _shot(tab: Any, name: str) -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(OUTPUT / f"{name}.png"), full_page=False)


def _rows(tab: Any, selector: str = "#matrix tr[data-action]") -> list[dict[str, str]]:
    return tab.eval_on_selector_all(
        selector,
        """rows => rows.map(r => ({
        action: r.dataset.action, method: r.dataset.method, status: r.dataset.status,
        situation: r.dataset.situation, outcome: r.dataset.outcome || "", hidden: r.hidden || r.parentElement.hidden,
        text: r.querySelector('.outcome-cell') ? r.querySelector('.outcome-cell').innerText.trim() : "",
        changed: r.dataset.changed || "", change: r.dataset.change || ""}))""",
    )


def test_matrix_has_a_row_for_every_status_with_the_engines_outcomes(page: Any, deciders: Any) -> None:
    decider = deciders[0]
    expected = matrix(decider, now=dt.datetime.fromisoformat(NOW))
    page.goto(page.base + "matrix?" + urllib.parse.urlencode({"now": NOW}))
    rows = _rows(page)
    _shot(page, "matrix")
    assert [(r["action"], r["method"], r["status"], r["situation"], r["outcome"]) for r in rows] == [
        (*row.key, row.outcome) for row in expected.rows
    ]
    assert all(r["text"] == r["outcome"] for r in rows), "each cell says its outcome in text"
    vocab = decider.bundle.vocabulary
    for action in decider.compiled:
        for method, statuses in vocab.methods.items():
            shown = {r["status"] for r in rows if (r["action"], r["method"]) == (action, method)}
            assert shown >= set(statuses) | set(vocab.top_statuses), (action, method)


def test_matrix_filters_by_outcome_and_text(page: Any, deciders: Any) -> None:
    expected = matrix(deciders[0], now=dt.datetime.fromisoformat(NOW))
    page.goto(page.base + "matrix?" + urllib.parse.urlencode({"now": NOW}))
    page.select_option("#filter-outcome", "DENY")
    visible = [r for r in _rows(page) if not r["hidden"]]
    assert len(visible) == sum(1 for row in expected.rows if row.outcome == "DENY") > 0
    assert {r["outcome"] for r in visible} == {"DENY"}
    assert page.inner_text("#matrix-shown") == str(len(visible))
    code = expected.rows[0].reasons[0]
    page.select_option("#filter-outcome", "")
    page.fill("#filter-text", code.lower())
    visible = [r for r in _rows(page) if not r["hidden"]]
    assert (
        len(visible)
        == sum(
            1
            for row in expected.rows
            if code in row.reasons or code in row.follow_ups or any(code.lower() in r.lower() for r in row.rules)
        )
        > 0
    )


def test_clicking_a_cell_shows_its_messages_follow_ups_and_rule_source(page: Any, deciders: Any) -> None:
    decider = deciders[0]
    expected = matrix(decider, now=dt.datetime.fromisoformat(NOW))
    row = next(r for r in expected.rows if r.decision is not None and r.follow_ups and r.rules)
    page.goto(page.base + "matrix?" + urllib.parse.urlencode({"now": NOW}))
    selector = (
        f'#matrix tr[data-action="{row.action}"][data-method="{row.method}"]'
        f'[data-status="{row.status}"][data-situation="{row.situation}"] a.cell-link'
    )
    page.click(selector)
    panel = page.wait_for_selector("#cell-detail:not([hidden]) h2")
    assert panel is not None
    text = page.inner_text("#cell-detail")
    for reason in row.decision.reasons:
        assert reason.message in text
    for follow_up in row.decision.follow_ups:
        assert follow_up.message in text
        assert follow_up.code in text
        if follow_up.path:
            assert follow_up.path in text
            assert follow_up.http_method in text
    for rule_id in row.rules:
        file, line, yaml_text = rule_source(decider, rule_id)
        assert f"{file}:{line}" in text
        assert yaml_text.strip().splitlines()[0].strip() in text
    _shot(page, "matrix-cell")
    # Keyboard: Escape closes and gives focus back; Enter on a focused cell opens it again.
    page.keyboard.press("Escape")
    assert page.is_hidden("#cell-detail")
    page.keyboard.press("Enter")
    page.wait_for_selector("#cell-detail:not([hidden]) h2")
    assert row.status in page.inner_text("#cell-detail h2")


def _first_case(decider: Any, bundle: Path, want: str, follow_ups: bool) -> Any:
    for case in load_cases(bundle):
        if case.order_json is not None or "error" in case.expect:
            continue
        decision = decider.decide(case.snapshot)
        if decision.outcome == want and bool(decision.follow_ups) == follow_ups:
            return case, decision
    raise AssertionError(f"the bundle has no case deciding {want} (follow-ups: {follow_ups})")


def _decided(page: Any) -> tuple[str, str]:
    page.wait_for_selector("#outcome")
    return page.inner_text("#outcome"), page.inner_text("#result")


@pytest.mark.parametrize(("want", "follow_ups"), [("ALLOW", True), ("DENY", False)])
def test_playground_decides_a_sample(page: Any, deciders: Any, bundles: Any, want: str, follow_ups: bool) -> None:
    case, expected = _first_case(deciders[0], bundles[0], want, follow_ups)
    page.goto(page.base + "playground")
    value = page.eval_on_selector_all("#sample option", "(os, name) => os.find(o => o.text === name).value", case.name)
    with page.expect_navigation():
        page.select_option("#sample", value)  # choosing a sample loads it
    assert json.loads(page.input_value("#order")) == case.order
    page.click("#decide")
    outcome, text = _decided(page)
    assert outcome == expected.outcome == want
    for item in (*expected.reasons, *expected.follow_ups):
        assert item.code in text
        assert item.message in text
    for name in expected.matched_rules:
        assert name in page.inner_text("#matched-rules")
    _shot(page, f"playground-sample-{want.lower()}")


def test_playground_decides_a_pasted_order(page: Any, deciders: Any, bundles: Any) -> None:
    case, expected = _first_case(deciders[0], bundles[0], "ALLOW", True)
    page.goto(page.base + "playground")
    page.fill("#order", json.dumps(case.order, indent=1))
    page.fill("#appointment", json.dumps(case.appointment) if case.appointment is not None else "")
    page.fill("#now", case.now_text)
    page.select_option("#action", case.action)
    page.click("#decide")
    outcome, text = _decided(page)
    assert outcome == expected.outcome
    assert [f.code for f in expected.follow_ups]
    assert all(f.code in text for f in expected.follow_ups)
    _shot(page, "playground")


def test_playground_invalid_json_shows_the_error_naming_the_field(page: Any) -> None:
    bad = '{"id": "o-1", "events": [}'
    with pytest.raises(SnapshotError) as expected:
        parse_json_object(bad, "order_json")
    page.goto(page.base + "playground")
    page.fill("#order", bad)
    page.click("#decide")
    error = page.wait_for_selector("#error")
    assert error is not None
    assert page.get_attribute("#error", "data-field") == expected.value.field == "order_json"
    assert page.inner_text("#error") == f"{expected.value.field}: {expected.value.message}"
    assert page.get_attribute("#order", "aria-invalid") == "true"
    assert page.input_value("#order") == bad  # the input is kept for fixing
    assert page.query_selector("#outcome") is None
    _shot(page, "playground-error")


def test_candidate_with_a_48h_refund_window_shows_the_changed_cells(page: Any, deciders: Any) -> None:
    now = dt.datetime.fromisoformat(NOW)
    old, new = deciders
    changes = diff_matrices(matrix(old, now=now, compare_with=[new]), matrix(new, now=now, compare_with=[old]))
    assert any(c.before is not None and c.after is not None for c in changes), (
        "a longer refund window changes the answer of some cells"
    )
    page.goto(page.base + "compare?" + urllib.parse.urlencode({"now": NOW}))
    rows = _rows(page, "#changes tr[data-action]")
    assert [(r["action"], r["method"], r["status"], r["situation"]) for r in rows] == [c.key for c in changes]
    for row, change in zip(rows, changes, strict=True):
        assert row["changed"], row
        assert row["change"] == ("added" if change.before is None else "removed" if change.after is None else "changed")
        if change.before is not None and change.after is not None:
            differs = {
                c for c in ("outcome", "reasons", "follow_ups") if getattr(change.before, c) != getattr(change.after, c)
            }
            assert set(row["changed"].split()) == differs
    highlighted = page.eval_on_selector_all("#changes td.changed", "cells => cells.length")
    assert highlighted >= len(changes)
    _shot(page, "compare")


def test_bundle_page_shows_the_report_and_the_cases(page: Any, deciders: Any, bundles: Any) -> None:
    cases = load_cases(bundles[0])
    page.goto(page.base + "bundle")
    assert page.inner_text("#revision") == deciders[0].ref.revision
    assert page.inner_text("#digest") == deciders[0].ref.digest
    results = page.eval_on_selector_all("#cases tr[data-case]", "rs => rs.map(r => [r.dataset.case, r.dataset.result])")
    assert [name for name, _ in results] == [c.name for c in cases]
    assert {result for _, result in results} == {"pass"}
    _shot(page, "bundle")
    # The candidate's own cases pin the old window: the console shows which fail, and why.
    page.goto(page.base + "bundle?which=candidate&failed=1")
    assert page.inner_text("#revision") == deciders[1].ref.revision
    failing = page.eval_on_selector_all("#cases tr[data-case]", "rs => rs.map(r => r.dataset.result)")
    assert failing
    assert set(failing) == {"fail"}
    assert page.is_visible("#candidate-failing")
    _shot(page, "bundle-candidate")


def test_matrix_and_bundle_work_without_javascript(browser: Any, console_url: str, deciders: Any) -> None:
    """Static content needs no script: the filters apply on the server, a row opens its own page."""
    decider = deciders[0]
    expected = matrix(decider, now=dt.datetime.fromisoformat(NOW))
    context = browser.new_context(java_script_enabled=False)
    try:
        tab = context.new_page()
        tab.goto(console_url + "matrix?" + urllib.parse.urlencode({"now": NOW}))
        tab.select_option("#filter-outcome", "DENY")
        with tab.expect_navigation():
            tab.click("#matrix-filters button[type=submit]")
        rows = _rows(tab)
        assert [(r["action"], r["method"], r["status"], r["situation"]) for r in rows] == [
            row.key for row in expected.rows if row.outcome == "DENY"
        ]
        row = next(r for r in expected.rows if r.outcome == "DENY" and r.rules and r.decision is not None)
        with tab.expect_navigation():
            tab.click(
                f'#matrix tr[data-status="{row.status}"][data-situation="{row.situation}"]'
                f'[data-method="{row.method}"][data-action="{row.action}"] a.cell-link'
            )
        file, line, _ = rule_source(decider, row.rules[0])
        assert f"{file}:{line}" in tab.inner_text("#cell-detail")
        tab.goto(console_url + "bundle")
        assert tab.inner_text("#revision") == decider.ref.revision
    finally:
        context.close()
