"""The state directory: a damaged record is logged and ignored, and its paths never leave the directory."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from server.api import log
from server.lifecycle import BundleManager, StateDir
from server.registry import Registry
from tests.support.bundles import bundle_variant


@pytest.mark.parametrize(
    "record",
    [
        "{}",
        '{"digest": "x", "archive": "y.tar.gz"}',
        "not json",
        "[1, 2]",
        '{"revision": "r", "digest": "d", "archive": "/etc/passwd"}',
        '{"revision": "r", "digest": "d", "archive": "../outside.tar.gz"}',
        '{"revision": "r", "digest": "d", "archive": "%s.tar.gz"}' % ("a" * 64),
    ],
)
def test_a_damaged_active_record_is_ignored_and_the_source_serves(tmp_path: Path, record: str) -> None:
    """No revision, not JSON, an absolute or escaping archive path, a missing archive: logged once, ignored."""
    stream = io.StringIO()
    log.configure(stream=stream)
    state = StateDir(tmp_path / "state")
    outside = tmp_path / "outside.tar.gz"
    outside.write_bytes(b"not an archive")
    (state.path / "active.json").write_text(record)
    manager = BundleManager(Registry(), state=state)
    assert manager.restore() is None
    assert manager.restore() is None
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["event"] for r in lines] == ["state_record_ignored"]  # once, however often it is read
    manager.activate_path(bundle_variant(tmp_path / "src", revision="src"))
    assert manager.registry.active().ref.revision == "src"
    assert StateDir(tmp_path / "state").read()["revision"] == "src"


def test_archive_paths_are_confined_to_the_state_directory(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    with pytest.raises(ValueError, match="not a stored archive name"):
        state.archive_path({"archive": "/etc/passwd"})
    with pytest.raises(ValueError, match="not a stored archive name"):
        state.archive_path({"archive": "../../x.tar.gz"})
    name = "b" * 64 + ".tar.gz"
    assert state.archive_path({"archive": name}) == state.revisions / name


def test_serve_starts_from_the_source_when_active_json_is_damaged(tmp_path: Path) -> None:
    """`serve` with a state record lacking `revision` serves the valid source instead of exiting."""
    from tests.support.servers import serve_process

    state = tmp_path / "state"
    (state / "revisions").mkdir(parents=True)
    (state / "active.json").write_text('{"archive": "x.tar.gz"}')
    source = bundle_variant(tmp_path / "src", revision="src")
    with serve_process(source, "--state-dir", str(state)) as proc:
        assert "state_record_ignored" in proc.log()
        assert proc.terminate() == 0
