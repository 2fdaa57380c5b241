"""The fleet rehearsal (short variant) and its parts: the bundle server and the revisions."""

from __future__ import annotations

import io
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.fleet.bundles import BundleServer, make_revision
from tests.fleet.rehearsal import CI, FIXTURE, rehearse


def _get(url: str, etag: str = "", timeout: float = 5) -> tuple[int, bytes, str]:
    request = urllib.request.Request(url, headers={"If-None-Match": etag} if etag else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read(), resp.headers.get("ETag", "")
    except urllib.error.HTTPError as exc:
        return exc.code, b"", exc.headers.get("ETag", "")


def test_bundle_server_answers_304_to_a_matching_etag_and_can_go_down() -> None:
    server = BundleServer()
    etag = server.publish(b"first")
    server.start()
    try:
        assert _get(server.url) == (200, b"first", etag)
        assert _get(server.url, etag)[0] == 304
        assert _get(server.url.replace(".tar.gz", ".zip"))[0] == 404
        new = server.publish(b"second")
        assert new != etag
        assert _get(server.url, etag) == (200, b"second", new)
        server.stop()
        with pytest.raises(urllib.error.URLError):
            _get(server.url)
        server.start()  # the same port again
        assert _get(server.url, new)[0] == 304
        server.stall()
        with pytest.raises((TimeoutError, urllib.error.URLError)):
            _get(server.url, timeout=1)
        server.resume()
        assert _get(server.url, new)[0] == 304
    finally:
        server.stop()


def test_revisions_differ_in_their_answers_and_the_broken_one_is_refused(tmp_path: Path) -> None:
    from server.bundle.archive import generate_keypair, verify_archive
    from server.registry import build_decider

    generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub")
    good = make_revision(FIXTURE, tmp_path, "r-7", tmp_path / "k.pem", serial=7)
    (tmp_path / "r-7.check.tar.gz").write_bytes(good.archive)
    manifest = verify_archive(tmp_path / "r-7.check.tar.gz", tmp_path / "k.pub")
    assert (manifest["revision"], manifest["serial"]) == ("r-7", 7)
    decider = build_decider(good.directory)
    try:
        from server.cases import load_cases

        decision = decider.decide(load_cases(good.directory)[0].snapshot)
        messages = [r.message for r in decision.reasons] + [f.message for f in decision.follow_ups]
        assert messages
        assert all(m.endswith(" [r-7]") for m in messages)
    finally:
        decider.close()
    # make_revision itself refuses to return a broken revision that would load.
    broken = make_revision(FIXTURE, tmp_path, "r-8", tmp_path / "k.pem", serial=8, good=False)
    assert not broken.good


@pytest.mark.integration
@pytest.mark.slow
def test_fleet_rehearsal() -> None:
    """Three serve processes, one bundle URL, load with round_robin and retries: no failure, no wrong answer."""
    out = io.StringIO()
    outcome = rehearse(CI, FIXTURE, out=out)
    print(out.getvalue())
    assert not outcome.problems, outcome.problems
    assert outcome.failed == 0, outcome.table()
    assert outcome.wrong == 0, outcome.table()
    assert outcome.calls > 1000
    assert set(outcome.by_revision) <= {"fleet-1", "fleet-2", "fleet-4"}
    assert outcome.by_revision["fleet-2"] > 0
    assert outcome.by_revision["fleet-4"] > 0
    assert len(outcome.converge_s) == 2
    assert outcome.restored_before_url_s is not None
    assert "t (s)" in out.getvalue()
    assert "PASS" in out.getvalue()
