"""`order-policy bundle build`: serial and expiry in the manifest; a warning when a revision label is reused."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from server.bundle.archive import verify_archive
from server.cli import main
from tests.support.bundles import bundle_variant, set_value


def test_build_writes_the_serial_and_expiry(tmp_path: Path, capsys) -> None:
    out = tmp_path / "b.tar.gz"
    bundle = bundle_variant(tmp_path / "b", revision="b1")
    assert main(["bundle", "build", str(bundle), "-o", str(out), "--serial", "42", "--expires-in", "2d"]) == 0
    manifest = verify_archive(out, None)
    assert manifest["serial"] == 42
    expires = dt.datetime.fromisoformat(manifest["expires"])
    assert dt.timedelta(days=1, hours=23) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(days=2)
    assert main(["bundle", "build", str(bundle), "-o", str(out)]) == 0
    assert verify_archive(out, None)["serial"] >= int(dt.datetime.now(dt.UTC).timestamp()) - 60  # default: now


def test_build_warns_when_the_previous_archive_held_the_label_with_other_content(tmp_path: Path, capsys) -> None:
    out = tmp_path / "b.tar.gz"
    bundle = bundle_variant(tmp_path / "b", revision="same")
    assert main(["bundle", "build", str(bundle), "-o", str(out), "--format", "json"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["bundle", "build", str(bundle), "-o", str(out), "--format", "json"]) == 0  # same content
    assert "warning" not in capsys.readouterr().err
    set_value(bundle / "manifest.yaml", ["description"], "other content, same revision")
    assert main(["bundle", "build", str(bundle), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning" in err
    assert "`same`" in err
    assert "bump the revision" in err
