"""Swappable bundles: activation checks, persistence, rollback, followers, sources."""

from __future__ import annotations

import datetime as dt
import http.server
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from server.bundle.archive import build_archive, generate_keypair, sign_archive
from server.decide import Decider
from server.errors import ErrorList, PolicyError
from server.lifecycle import BundleManager, StateDir
from server.model import Snapshot
from server.registry import Registry
from tests.support.bundles import ROOT, bundle_variant, set_revision, set_value
from tests.support.memory import rss_kib
from tests.support.servers import wait_until
from tests.support.snapshots import PHLEBOTOMY_APPOINTMENT, PHLEBOTOMY_ORDER

ORDER = PHLEBOTOMY_ORDER
APPT = PHLEBOTOMY_APPOINTMENT
NOW = dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC)  # 32 h notice


def revision_of(tmp: Path, name: str, *, refund: str = "24h") -> Path:
    """A copy of the default bundle with its own revision (and refund window)."""
    dest = bundle_variant(tmp / name, revision=name)
    if refund != "24h":
        set_value(dest / "data/settings.yaml", ["params", "refund_window"], refund)
        # the bundle's own refund cases pin 24 h: drop them for this variant
        (dest / "tests/refunds.yaml").unlink()
    return dest


def archive_of(tmp: Path, bundle: Path) -> bytes:
    out = tmp / f"{bundle.name}.tar.gz"
    build_archive(bundle, out)
    return out.read_bytes()


def refund_follow_up(registry: Registry) -> str:
    codes = {f.code for f in registry.decide(Snapshot("cancel_order", ORDER, APPT, NOW)).follow_ups}
    return "FULL_REFUND" if "FULL_REFUND" in codes else "NON_REFUNDABLE"


@pytest.fixture
def manager(tmp_path: Path):
    registry = Registry(keep=3)
    mgr = BundleManager(registry, state=StateDir(tmp_path / "state"))
    yield mgr
    mgr.stop()


def test_activation_persists_and_a_restart_serves_the_last_good_revision(tmp_path, manager):
    """Activate r1, then a new manager on the same state directory restores r1 without any source."""
    manager.activate_path(revision_of(tmp_path, "r1"))
    assert manager.registry.active().ref.revision == "r1"
    fresh = BundleManager(Registry(), state=StateDir(tmp_path / "state"))
    restored = fresh.restore()
    assert restored is not None
    assert restored.ref.revision == "r1"
    assert refund_follow_up(fresh.registry) == "FULL_REFUND"


@pytest.mark.parametrize("breakage", ["invalid_yaml", "failing_case", "truncated_archive", "bad_signature", "unsigned"])
def test_a_broken_bundle_is_refused_and_the_old_one_keeps_serving(tmp_path, breakage):
    """Invalid YAML, a failing own test, a truncated archive or a bad/missing signature: refused."""
    priv, pub = tmp_path / "k", tmp_path / "k.pub"
    generate_keypair(priv, pub)
    keyed = breakage in ("bad_signature", "unsigned")
    manager = BundleManager(Registry(), state=StateDir(tmp_path / "state"), verification_key=pub if keyed else None)
    good = tmp_path / "good.tar.gz"
    build_archive(revision_of(tmp_path, "good"), good)
    sign_archive(good, priv)
    manager.activate_archive(good.read_bytes(), origin="test")
    bad = revision_of(tmp_path, "bad")
    if breakage == "invalid_yaml":
        (bad / "policies/cancel_order.yaml").write_text("rules: [unclosed\n")
    elif breakage == "failing_case":
        set_value(bad / "data/settings.yaml", ["params", "refund_window"], "48h")
    if breakage in ("invalid_yaml",):
        with pytest.raises(ErrorList) as err:
            manager.activate_path(bad)
    else:
        out = tmp_path / "bad.tar.gz"
        build_archive(bad, out)
        data = out.read_bytes()
        if breakage == "truncated_archive":
            data = data[: len(data) // 2]
        elif breakage == "bad_signature":
            other_priv, _ = tmp_path / "o", tmp_path / "o.pub"
            generate_keypair(other_priv, tmp_path / "o.pub")
            sign_archive(out, other_priv)
            data = out.read_bytes()
        with pytest.raises(ErrorList) as err:
            manager.activate_archive(data, origin="test")
    expected = {
        "invalid_yaml": "bundle_parse_error",
        "failing_case": "bundle_test_failed",
        "truncated_archive": "bundle_bad_archive",
        "bad_signature": "bundle_bad_signature",
        "unsigned": "bundle_unsigned",
    }[breakage]
    assert expected in {e.code for e in err.value.errors}
    assert manager.registry.active().ref.revision == "good"
    assert manager.status.failures == 1
    assert manager.status.last_error
    assert StateDir(tmp_path / "state").read()["revision"] == "good"
    manager.stop()


def test_pinned_revisions_and_rollback(tmp_path, manager):
    """The last 3 revisions stay loaded; a pinned request uses its revision; rollback re-activates one."""
    for name, refund in (("r1", "24h"), ("r2", "48h"), ("r3", "24h"), ("r4", "48h")):
        manager.activate_path(revision_of(tmp_path, name, refund=refund))
    reg = manager.registry
    assert reg.revisions() == ["r2", "r3", "r4"]
    assert reg.get("r3").decide(Snapshot("cancel_order", ORDER, APPT, NOW)).bundle.revision == "r3"
    with pytest.raises(PolicyError) as err:
        reg.get("r1")
    assert getattr(err.value, "code", "") == "revision_not_loaded"
    assert refund_follow_up(reg) == "NON_REFUNDABLE"  # r4: 48 h window, 32 h notice
    manager.rollback("r3")
    assert reg.active().ref.revision == "r3"
    assert refund_follow_up(reg) == "FULL_REFUND"
    assert StateDir(tmp_path / "state").read()["revision"] == "r3"


def test_a_follower_process_state_ends_on_the_same_revision(tmp_path):
    """Two managers sharing a state directory (as workers do): one activates, the other follows."""
    state = tmp_path / "state"
    leader = BundleManager(Registry(), state=StateDir(state))
    follower = BundleManager(Registry(), state=StateDir(state))
    leader.activate_path(revision_of(tmp_path, "r1"))
    follower.restore()
    follower.watch_state()
    leader.activate_path(revision_of(tmp_path, "r2", refund="48h"))
    wait_until(lambda: follower.registry.active().ref.revision == "r2", 20, message="follower on r2")
    leader.rollback("r1")
    wait_until(lambda: follower.registry.active().ref.revision == "r1", 20, message="follower on r1")
    leader.stop()
    follower.stop()


def test_a_watched_directory_is_reloaded_when_it_changes(tmp_path, manager):
    """Editing the source directory activates the new revision; a broken edit is refused."""
    source = revision_of(tmp_path, "w1")
    manager.activate_path(source)
    manager.watch_source(str(source))

    def activated(revision: str) -> bool:
        # Until the watcher is running an edit may go unseen: write again until it is seen.
        if manager.registry.active().ref.revision == revision:
            return True
        set_revision(source, revision)
        return wait_until(lambda: manager.registry.active().ref.revision == revision, 0.5, raising=False)

    wait_until(lambda: activated("w2"), 20, interval=0, message="revision w2 activated")
    (source / "policies/cancel_order.yaml").write_text("rules: [broken\n")
    wait_until(lambda: manager.status.failures > 0, 20, message="the broken edit refused")
    assert manager.registry.active().ref.revision == "w2"


class _BundleServer(http.server.BaseHTTPRequestHandler):
    archive = b""
    etag = '"v1"'
    hits: list[int] = []

    def do_GET(self) -> None:
        if self.headers.get("If-None-Match") == self.etag:
            self.hits.append(304)
            self.send_response(304)
            self.end_headers()
            return
        self.hits.append(200)
        self.send_response(200)
        self.send_header("ETag", self.etag)
        self.send_header("Content-Length", str(len(self.archive)))
        self.end_headers()
        self.wfile.write(self.archive)

    def log_message(self, *args: object) -> None:
        pass


def test_an_http_source_is_polled_with_etags(tmp_path, manager):
    """A bundle server on loopback: 200 activates, 304 changes nothing, a new ETag activates the new revision."""
    _BundleServer.archive = archive_of(tmp_path, revision_of(tmp_path, "h1"))
    _BundleServer.hits = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BundleServer)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/bundle.tar.gz"
    try:
        etag = manager.load_url(url)
        assert manager.registry.active().ref.revision == "h1"
        assert etag == '"v1"'
        assert manager.load_url(url, etag) == etag
        _BundleServer.archive = archive_of(tmp_path, revision_of(tmp_path, "h2"))
        _BundleServer.etag = '"v2"'
        assert manager.load_url(url, etag) == '"v2"'
        assert manager.registry.active().ref.revision == "h2"
        assert _BundleServer.hits == [200, 304, 200]
    finally:
        httpd.shutdown()
        httpd.server_close()
    with pytest.raises(ErrorList):
        manager.load_url(url, etag)  # the server is gone: refused, h2 keeps serving
    assert manager.registry.active().ref.revision == "h2"


@pytest.mark.slow
def test_kill_9_during_swaps_restarts_on_a_good_revision(tmp_path):
    """A process swapping r1/r2 in a loop is killed with SIGKILL; restarting serves one of them."""
    state = tmp_path / "state"
    r1, r2 = revision_of(tmp_path, "r1"), revision_of(tmp_path, "r2", refund="48h")
    script = textwrap.dedent(f"""
        import sys
        from server.lifecycle import BundleManager, StateDir
        from server.registry import Registry
        m = BundleManager(Registry(), state=StateDir({str(state)!r}))
        print("ready", flush=True)
        i = 0
        while True:
            m.activate_path({str(r1)!r} if i % 2 else {str(r2)!r})
            i += 1
            print("activated", flush=True)
    """)
    for delay in (0.05, 0.3, 0.61):
        with subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True) as proc:
            assert proc.stdout.readline().strip() == "ready"
            assert proc.stdout.readline().strip() == "activated"  # then kill it mid-swap
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        fresh = BundleManager(Registry(), state=StateDir(state))
        restored = fresh.restore()
        assert restored is not None
        assert restored.ref.revision in ("r1", "r2")
        assert refund_follow_up(fresh.registry) == (
            "FULL_REFUND" if restored.ref.revision == "r1" else "NON_REFUNDABLE"
        )
        fresh.registry.get().close()


@pytest.mark.slow
def test_memory_stays_flat_over_1000_swaps_under_use(fixture_bundle):
    """1,000 swaps with decisions between them: retired rulesets are freed (RSS within 20 MiB)."""
    from server.bundle import load_bundle

    bundle = load_bundle(fixture_bundle)
    registry = Registry(keep=3)
    snap = Snapshot("cancel_order", ORDER, APPT, NOW)
    for _ in range(50):
        registry.activate(Decider(bundle))
        registry.decide(snap)
    before = rss_kib()
    for i in range(1000):
        registry.activate(Decider(bundle))
        assert registry.decide(snap).outcome == "ALLOW", i
    grown = rss_kib() - before
    assert grown < 20 * 1024, f"RSS grew by {grown} KiB over 1,000 swaps"


def test_a_revision_retired_between_lookup_and_use_is_retried_with_the_new_one(fixture_bundle):
    """A request that looked up a revision just before a swap gets the new revision, not an error."""
    from server.bundle import load_bundle
    from server.decide import RetiredError

    bundle = load_bundle(fixture_bundle)
    registry = Registry(keep=1)
    old = registry.activate(Decider(bundle))
    new = registry.activate(Decider(bundle))
    snap = Snapshot("cancel_order", ORDER, APPT, NOW)
    with pytest.raises(RetiredError):
        old.decide(snap)  # retired and freed: refuses instead of touching a deleted ruleset
    assert registry.decide(snap).bundle == new.ref
