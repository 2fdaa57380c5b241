"""Sources: URL fetches within one deadline, backoff, redirects, plain-http refusal; loops that never die."""

from __future__ import annotations

import http.server
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.bundle.archive import build_archive
from server.errors import BundleError, ErrorList
from server.lifecycle import BundleManager, FetchOptions, StateDir
from server.lifecycle.sources import backoff, fetch
from server.registry import Registry
from tests.support.bundles import bundle_variant
from tests.support.servers import serve_command, serve_process, wait_until


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, object] = {}

    def do_GET(self) -> None:
        action = self.routes.get(self.path, 404)
        if callable(action):
            action(self)
        elif isinstance(action, bytes):
            self.send_response(200)
            self.send_header("Content-Length", str(len(action)))
            self.send_header("ETag", '"e1"')
            self.end_headers()
            self.wfile.write(action)
        elif isinstance(action, str):
            self.send_response(302)
            self.send_header("Location", action)
            self.end_headers()
        else:
            self.send_response(int(action))  # type: ignore[arg-type]
            self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def web() -> Iterator[tuple[str, dict[str, object]]]:
    routes: dict[str, object] = {}
    handler = type("H", (_Handler,), {"routes": routes})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{httpd.server_address[1]}", routes
    httpd.shutdown()
    httpd.server_close()


def drip(handler: http.server.BaseHTTPRequestHandler) -> None:
    """A server that sends one byte every 0.5 s, forever (until the client goes)."""
    handler.send_response(200)
    handler.send_header("Content-Length", "1000000")
    handler.end_headers()
    try:
        for _ in range(10_000):
            handler.wfile.write(b"x")
            handler.wfile.flush()
            time.sleep(0.5)
    except OSError:
        pass


def test_a_dripping_server_is_cut_off_at_the_deadline(web) -> None:
    host, routes = web
    routes["/b.tar.gz"] = drip
    start = time.monotonic()
    with pytest.raises(BundleError) as err:
        fetch(f"http://{host}/b.tar.gz", options=FetchOptions(timeout=1.5))
    assert err.value.code == "bundle_fetch_failed"
    assert "longer than 1.5 s" in err.value.message
    assert time.monotonic() - start < 3


def test_stop_cuts_off_a_fetch_in_flight(tmp_path: Path, web) -> None:
    host, routes = web
    routes["/b.tar.gz"] = drip
    manager = BundleManager(Registry(), fetch_options=FetchOptions(timeout=60))
    manager.watch_url(f"http://{host}/b.tar.gz", poll_interval=60, fetch_now=True)
    wait_until(lambda: manager._fetches, 10, message="a fetch in flight")
    start = time.monotonic()
    manager.stop()
    assert time.monotonic() - start < 2


def test_redirects_to_another_host_are_refused_unless_allowed(tmp_path: Path, web) -> None:
    host, routes = web
    port = host.rsplit(":", 1)[1]
    data = tmp_path / "a.tar.gz"
    build_archive(bundle_variant(tmp_path / "red", revision="red"), data)
    routes["/real.tar.gz"] = data.read_bytes()
    routes["/same"] = "/real.tar.gz"
    routes["/other"] = f"http://localhost:{port}/real.tar.gz"
    assert fetch(f"http://{host}/same")[0] == data.read_bytes()
    with pytest.raises(BundleError) as err:
        fetch(f"http://{host}/other")
    assert "another host `localhost`" in err.value.message
    assert fetch(f"http://{host}/other", options=FetchOptions(allow_cross_host_redirects=True))[0] == data.read_bytes()


def test_backoff_grows_exponentially_with_jitter_up_to_the_interval() -> None:
    for failures, nominal in ((1, 1), (2, 2), (3, 4), (5, 16), (9, 30)):
        delays = [backoff(failures, 1.0, 30.0) for _ in range(200)]
        assert nominal * 0.8 <= min(delays)
        assert max(delays) <= nominal * 1.2
        assert max(delays) - min(delays) > 0  # jittered


def test_the_poller_backs_off_on_errors_and_loads_when_the_server_recovers(tmp_path: Path, web) -> None:
    host, routes = web
    hits: list[float] = []

    def failing(handler: http.server.BaseHTTPRequestHandler) -> None:
        hits.append(time.monotonic())
        handler.send_response(503)
        handler.end_headers()

    routes["/b.tar.gz"] = failing
    manager = BundleManager(Registry(), fetch_options=FetchOptions(timeout=5, backoff_base=0.2))
    manager.watch_url(f"http://{host}/b.tar.gz", poll_interval=10, fetch_now=True)
    try:
        wait_until(lambda: len(hits) >= 4, 20, message="four failed fetches")
        gaps = [b - a for a, b in zip(hits, hits[1:], strict=False)]
        assert gaps[0] < gaps[-1]
        assert gaps[-1] >= 0.5
        out = tmp_path / "ok.tar.gz"
        build_archive(bundle_variant(tmp_path / "ok", revision="ok"), out)
        routes["/b.tar.gz"] = out.read_bytes()
        wait_until(lambda: manager.registry.active() is not None, 20, message="loaded after recovery")
        assert manager.status.failures >= 4
    finally:
        manager.stop()


def test_the_poller_survives_an_exception_in_a_poll(tmp_path: Path, web, monkeypatch) -> None:
    host, routes = web
    out = tmp_path / "ok.tar.gz"
    build_archive(bundle_variant(tmp_path / "ok", revision="ok"), out)
    routes["/b.tar.gz"] = out.read_bytes()
    manager = BundleManager(Registry(), fetch_options=FetchOptions(timeout=5, backoff_base=0.1))
    real = manager.load_url
    calls = []

    def flaky(url: str, etag: str = "") -> str:
        calls.append(url)
        if len(calls) == 1:
            raise KeyError("a bug")
        return real(url, etag)

    monkeypatch.setattr(manager, "load_url", flaky)
    manager.watch_url(f"http://{host}/b.tar.gz", poll_interval=10, fetch_now=True)
    try:
        wait_until(lambda: manager.registry.active() is not None, 20, message="loaded after the exception")
        assert manager.status.loop_errors == 1
        assert "KeyError" in manager.status.history[0]["detail"]
    finally:
        manager.stop()


def test_the_watcher_survives_a_missing_directory_and_loads_it_once_it_exists(tmp_path: Path) -> None:
    manager = BundleManager(Registry())
    source = tmp_path / "later"
    manager.watch_source(str(source))
    try:
        wait_until(lambda: manager.status.loop_errors > 0, 20, message="the watch failed")
        bundle_variant(source, revision="later")
        wait_until(
            lambda: manager.registry.active() is not None or (source.joinpath("manifest.yaml").touch() and False),
            30,
            interval=0.5,
            message="the directory loaded",
        )
    finally:
        manager.stop()


def test_plain_http_without_a_verification_key_is_refused_unless_allowed() -> None:
    proc = subprocess.run(
        serve_command("serve", "--bundle", "http://127.0.0.1:9/b.tar.gz", "--port", "0"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "--allow-unverified-source" in proc.stderr


def test_serve_binds_and_serves_the_restored_revision_before_fetching(tmp_path: Path, web) -> None:
    """A URL that drips: the restored revision answers at once; the fetch happens in the background."""
    host, routes = web
    routes["/b.tar.gz"] = drip
    state = StateDir(tmp_path / "state")
    BundleManager(Registry(), state=state).activate_path(bundle_variant(tmp_path / "kept", revision="kept"))
    start = time.monotonic()
    with serve_process(
        f"http://{host}/b.tar.gz",
        "--state-dir",
        str(state.path),
        "--allow-unverified-source",
        "--fetch-timeout",
        "2",
        timeout=30,
    ) as proc:
        assert time.monotonic() - start < 25
        wait_until(
            lambda: "bundle_fetch_failed" in proc.log() or "longer than" in proc.log(),
            20,
            message="the fetch refused after its deadline",
        )
        started = time.monotonic()
        assert proc.terminate(timeout=15) == 0
        assert time.monotonic() - started < 8
    with pytest.raises(ErrorList):
        BundleManager(Registry(), fetch_options=FetchOptions(timeout=1)).load_url(f"http://{host}/b.tar.gz")
