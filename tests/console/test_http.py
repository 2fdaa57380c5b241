"""The console over plain HTTP (no browser): routing, bounds, errors, read-only, reload, host checks."""

from __future__ import annotations

import html
import json
import re
import subprocess
import urllib.parse
from pathlib import Path

import pytest

from server.cases import load_cases
from server.cli.bundle_check import check_bundle
from server.console.app import is_loopback
from server.errors import SnapshotError
from server.facts import parse_json_object
from server.registry import build_decider
from tests.console.support import request, running_console, tree_digest
from tests.support.bundles import FIXTURE_BUNDLE, ROOT, copy_bundle, edit_yaml, set_revision
from tests.support.servers import serve_command, wait_until

PAGES = ("/matrix", "/playground", "/bundle", "/compare")
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_bundle(tmp_path_factory.mktemp("console") / "bundle")


@pytest.fixture(scope="module")
def console(bundle: Path):
    with running_console(bundle, watch=False) as server:
        yield server


def _text(page: str) -> str:
    """The page's visible text, roughly (tags dropped, entities decoded, spaces collapsed)."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page.replace("<wbr>", ""))).split())


def test_unknown_paths_are_404_pages_without_a_trace(console) -> None:
    for path in ("/nope", "/matrix/extra", "/static/nope.js", "/static/../state.py", "/%2e%2e/etc/passwd"):
        status, headers, body = request(console, "GET", path)
        assert status == 404, path
        assert headers["content-type"].startswith("text/html")
        assert "Not found" in body
        assert "Traceback" not in body
    status, _, body = request(console, "HEAD", "/nope")
    assert (status, body) == (404, "")


def test_root_redirects_to_the_matrix_and_static_files_are_served(console) -> None:
    status, headers, _ = request(console, "GET", "/")
    assert (status, headers["location"]) == (303, "/matrix")
    for name, kind in (("console.css", "text/css"), ("console.js", "text/javascript")):
        status, headers, body = request(console, "GET", f"/static/{name}")
        assert status == 200
        assert headers["content-type"].startswith(kind)
        assert body


def test_pages_reference_only_the_console_itself(console) -> None:
    """Offline: no script, style or image from anywhere else; the policy forbids it too."""
    for path in ("/playground", "/bundle", "/compare"):
        status, headers, body = request(console, "GET", path)
        assert status == 200, path
        refs = re.findall(r'(?:src|href|action)="([^"]*)"', body)
        assert refs, path
        assert all(not urllib.parse.urlsplit(r).netloc for r in refs), refs
        assert "default-src 'self'" in headers["content-security-policy"]


def test_request_bodies_are_bounded(bundle: Path) -> None:
    with running_console(bundle, watch=False, max_body=2048) as server:
        big = "order=" + "x" * 4096
        status, headers, body = request(server, "POST", "/playground", big, FORM)
        assert status == 413
        assert "larger than 2048 bytes" in body
        assert headers.get("connection") == "close"
        # No length: refused before anything is read.
        conn_status = _raw(
            server,
            b"POST /playground HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" % server.port,
        )
        assert conn_status.startswith(b"HTTP/1.1 411")
        status, _, _ = request(server, "POST", "/playground", "order=%7B%7D", {"Content-Type": "text/plain"})
        assert status == 415
        fields = "&".join(f"f{i}=1" for i in range(100))
        status, _, body = request(server, "POST", "/playground", fields, FORM)
        assert status == 400
        assert "64 fields" in body


def _raw(server, data: bytes) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(data)
        return sock.recv(4096)


def test_the_console_is_read_only(bundle: Path, console) -> None:
    before = tree_digest(bundle)
    for method in ("PUT", "DELETE", "PATCH"):
        status, headers, _ = request(console, method, "/bundle", "x")
        assert status == 405
        assert "GET" in headers["allow"]
    for path in ("/bundle", "/matrix", "/compare"):
        status, _, _ = request(console, "POST", path, "a=1", FORM)
        assert status == 405, path
    cases = load_cases(bundle)
    form = urllib.parse.urlencode(
        {"action": cases[0].action, "now": cases[0].now_text, "order": json.dumps(cases[0].order)}
    )
    assert request(console, "POST", "/playground", form, FORM)[0] == 200
    for path in PAGES:
        request(console, "GET", path)
    assert tree_digest(bundle) == before


def test_a_foreign_host_header_is_refused(console) -> None:
    """A page elsewhere cannot read the console by rebinding its own name to 127.0.0.1."""
    status, _, _ = request(console, "GET", "/bundle", headers={"Host": "attacker.example"})
    assert status == 421
    status, _, _ = request(console, "GET", "/bundle", headers={"Host": f"localhost:{console.port}"})
    assert status == 200


def test_playground_decides_through_the_decide_path(bundle: Path, console) -> None:
    decider = build_decider(bundle)
    try:
        cases = [c for c in load_cases(bundle) if c.order_json is None and "error" not in c.expect][:20]
        assert cases
        for case in cases:
            expected = decider.decide(case.snapshot)
            form = {
                "action": case.action,
                "now": case.now_text,
                "order": json.dumps(case.order),
                "appointment": json.dumps(case.appointment) if case.appointment is not None else "",
            }
            status, _, body = request(console, "POST", "/playground", urllib.parse.urlencode(form), FORM)
            assert status == 200, case.name
            outcome = re.search(r'id="outcome"[^>]*>([A-Z]+)<', body)
            assert outcome, case.name
            assert outcome.group(1) == expected.outcome, case.name
            result = _text(body[body.index('id="result"') :])
            for item in (*expected.reasons, *expected.follow_ups):
                assert item.code in result, case.name
                assert item.message in result, case.name
    finally:
        decider.close()


def test_playground_shows_the_apis_error_naming_the_field(console) -> None:
    for field, form in (
        ("order_json", {"action": "cancel_order", "order": '{"id": ', "appointment": ""}),
        ("appointment_json", {"action": "cancel_order", "order": '{"id": "o"}', "appointment": "[1]"}),
    ):
        text = form["order"] if field == "order_json" else form["appointment"]
        with pytest.raises(SnapshotError) as expected:
            parse_json_object(text, field)
        status, _, body = request(console, "POST", "/playground", urllib.parse.urlencode(form), FORM)
        assert status == 200
        error = re.search(r'<p id="error"[^>]*data-field="([^"]+)"[^>]*>(.*?)</p>', body, re.S)
        assert error, body[:2000]
        assert error.group(1) == field == expected.value.field
        assert html.unescape(re.sub(r"<[^>]+>", "", error.group(2))) == f"{field}: {expected.value.message}"
    status, _, body = request(
        console,
        "POST",
        "/playground",
        urllib.parse.urlencode({"action": "cancel_order", "order": '{"id": "o"}', "now": "yesterday"}),
        FORM,
    )
    assert status == 200
    assert 'data-field="now"' in body
    assert 'id="now"' in body


def test_a_bundle_that_does_not_load_shows_its_located_errors_on_every_page(tmp_path: Path) -> None:
    bad = copy_bundle(tmp_path / "bad")

    def unknown_reason(policy) -> None:
        rule = next(r for r in policy["rules"] if r.get("reasons"))
        rule["reasons"] = [*rule["reasons"], "NO_SUCH_REASON"]

    edit_yaml(bad / "policies" / "cancel_order.yaml", unknown_reason)
    (bad / "data" / "vocabulary.yaml").write_text("top_statuses: [\n", encoding="utf-8")
    _, errors, _ = check_bundle(bad, cases=True)
    assert errors
    with running_console(bad, watch=False) as server:
        for path in (*PAGES, "/cell?action=cancel_order", "/nope"):
            status, _, body = request(server, "GET", path)
            assert status in (200, 404), path
            assert "does not load" in body, path
            assert "Traceback" not in body, path
            text = _text(body)
            for error in errors:
                assert str(error.location) in text, (path, error)
                assert error.code in text, (path, error)


def test_a_missing_bundle_is_an_error_on_the_page_not_a_crash(tmp_path: Path) -> None:
    with running_console(tmp_path / "nowhere", watch=False) as server:
        status, _, body = request(server, "GET", "/bundle")
        assert status == 200
        assert "does not load" in body
        assert "bundle_io_error" in body


def test_the_console_reloads_when_the_files_change(tmp_path: Path) -> None:
    bundle = copy_bundle(tmp_path / "bundle")
    with running_console(bundle) as server:
        set_revision(bundle, "reloaded-1")
        wait_until(
            lambda: 'id="revision">reloaded-1<' in request(server, "GET", "/bundle")[2], message="the new revision"
        )
        generation = int(request(server, "GET", "/generation")[2])
        (bundle / "data" / "catalogue.yaml").write_text("reasons: {\n", encoding="utf-8")

        def broken() -> str | None:
            body = request(server, "GET", "/bundle")[2]
            return body if "does not load" in body else None

        body = wait_until(broken, message="the errors of the broken bundle")
        assert "data/catalogue.yaml" in _text(body)
        shutil_copy = (FIXTURE_BUNDLE / "data" / "catalogue.yaml").read_text(encoding="utf-8")
        (bundle / "data" / "catalogue.yaml").write_text(shutil_copy, encoding="utf-8")
        wait_until(
            lambda: 'id="revision">reloaded-1<' in request(server, "GET", "/bundle")[2], message="the fixed bundle"
        )
        assert int(request(server, "GET", "/generation")[2]) > generation


def test_loopback_addresses() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.1.2.3", "example.com"))


def _console_process(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        serve_command("console", *args), cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


@pytest.mark.parametrize(("host", "warned"), [("127.0.0.1", False), ("0.0.0.0", True)])
def test_another_host_than_loopback_needs_the_flag_and_prints_a_warning(bundle: Path, host: str, warned: bool) -> None:
    process = _console_process("--bundle", str(bundle), "--host", host, "--port", "0")
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert re.match(r"console: http://[\d.]+:\d+/ ", line), line
    finally:
        process.terminate()
        _, err = process.communicate(timeout=20)
    assert process.returncode == 0
    assert ("warning: the console listens on `0.0.0.0`" in err) is warned, err


def test_bundle_text_is_escaped_never_run(tmp_path: Path) -> None:
    """A message template holding markup is shown as text (a bundle is data, not a page)."""
    bundle = copy_bundle(tmp_path / "bundle")
    decider = build_decider(bundle)
    try:
        case = next(c for c in load_cases(bundle) if c.order_json is None and "error" not in c.expect)
        code = decider.decide(case.snapshot).reasons[0].code
    finally:
        decider.close()
    markup = '<script>alert("x")</script><img src=x onerror=alert(1)>'

    def inject(catalogue) -> None:
        catalogue["reasons"][code]["message"] = markup

    edit_yaml(bundle / "data" / "catalogue.yaml", inject)
    with running_console(bundle, watch=False) as server:
        form = {
            "action": case.action,
            "now": case.now_text,
            "order": json.dumps(case.order),
            "appointment": json.dumps(case.appointment) if case.appointment is not None else "",
        }
        status, _, body = request(server, "POST", "/playground", urllib.parse.urlencode(form), FORM)
        assert status == 200
        assert markup not in body
        assert "<img" not in body
        assert markup in _text(body)  # shown as the text it is


def test_a_browser_that_leaves_mid_answer_leaves_no_trace(console, capsys: pytest.CaptureFixture[str]) -> None:
    """A reset connection is not an error page or a stack trace; the console goes on serving."""
    import socket
    import struct

    for _ in range(5):
        with socket.create_connection(("127.0.0.1", console.port), timeout=10) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
            sock.sendall(b"GET /bundle HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % console.port)
    assert request(console, "GET", "/bundle")[0] == 200
    assert "Traceback" not in capsys.readouterr().err


def _write_samples(bundle: Path, path: Path) -> int:
    """The bundle's cases as recorded requests (one JSON line each), plus two lines that are not."""
    lines = []
    for case in load_cases(bundle):
        if case.order_json is not None or case.appointment_json is not None:
            continue
        lines.append(
            json.dumps(
                {
                    "request_id": f"r-{len(lines)}",
                    "action": case.action,
                    "now": case.now_text,
                    "order": case.order,
                    "appointment": case.appointment,
                }
            )
        )
    lines.insert(3, "{not json")
    lines.insert(7, json.dumps({"request_id": "no-order", "action": "cancel_order"}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def test_compare_shows_the_impact_over_the_samples(tmp_path: Path) -> None:
    from server.workbench import read_inputs, replay
    from tests.console.support import candidate_with_refund_window

    bundle = copy_bundle(tmp_path / "bundle")
    candidate = candidate_with_refund_window(bundle, tmp_path / "candidate")
    samples = tmp_path / "capture.jsonl"
    _write_samples(bundle, samples)
    old, new = build_decider(bundle), build_decider(candidate)
    try:
        impact = replay(old, new, read_inputs(samples))
    finally:
        old.close()
        new.close()
    assert impact.changed > 0
    assert impact.errors >= 2
    with running_console(bundle, candidate, samples, watch=False) as server:
        status, _, body = request(server, "GET", "/compare")
        assert status == 200
        text = _text(body)
        assert f"{impact.changed} of {impact.inputs} inputs change; {impact.errors} input(s) could not be read" in text
        counts = [int(n) for n in re.findall(r'<tr data-count="(\d+)"', body)]
        assert counts == [g.count for g in impact.groups]
        for group in impact.groups:
            assert group.request_ids[0] in text
        for error in impact.input_errors:  # named by file and line
            assert f"{error.file}:{error.line}" in text
        # The recorded requests are samples of the playground too.
        status, _, body = request(server, "GET", "/playground")
        assert status == 200
        assert ">r-0</option>" in body
        status, _, body = request(server, "GET", "/playground?sample=sample:0")
        first = json.loads(samples.read_text(encoding="utf-8").splitlines()[0])
        assert (
            json.loads(html.unescape(re.search(r'id="order"[^>]*>(.*?)</textarea>', body, re.S).group(1)))
            == first["order"]
        )


def test_compare_without_samples_replays_the_bundles_own_cases(tmp_path: Path) -> None:
    from server.console.pages import case_inputs
    from server.console.state import load_source
    from server.workbench import replay
    from tests.console.support import candidate_with_refund_window

    bundle = copy_bundle(tmp_path / "bundle")
    candidate = candidate_with_refund_window(bundle, tmp_path / "candidate")
    loaded = load_source(str(bundle), tmp_path / "work")
    new = build_decider(candidate)
    try:
        assert loaded.decider is not None
        impact = replay(loaded.decider, new, case_inputs(loaded))
    finally:
        loaded.decider.close() if loaded.decider else None
        new.close()
    assert impact.changed > 0
    with running_console(bundle, candidate, watch=False) as server:
        text = _text(request(server, "GET", "/compare")[2])
        assert "Impact over the bundle's own cases" in text
        assert f"{impact.changed} of {impact.inputs} inputs change" in text


def test_idle_connections_and_concurrent_requests_are_bounded(bundle: Path) -> None:
    import socket
    import time

    with running_console(bundle, watch=False, timeout=0.5, max_requests=1) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as idle:
            started = time.monotonic()
            assert idle.recv(1024) == b""  # the console closed the silent connection
            assert time.monotonic() - started < 5
        server.slots.acquire()  # one request in progress takes the only slot
        try:
            status, headers, _ = request(server, "GET", "/bundle")
            assert (status, headers["retry-after"]) == (503, "1")
        finally:
            server.slots.release()
        assert request(server, "GET", "/bundle")[0] == 200
