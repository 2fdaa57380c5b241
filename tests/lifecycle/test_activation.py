"""Activation: one pipeline, loops that never die, serials and expiry, immutable revision labels."""

from __future__ import annotations

import datetime as dt
import errno
import io
import json
import tarfile
from pathlib import Path

import pytest

from server.api import log
from server.bundle import yamlio
from server.bundle.archive import build_archive, generate_keypair, sign_archive
from server.errors import ErrorList
from server.lifecycle import BundleManager, StateDir
from server.lifecycle import manager as manager_module
from server.registry import Registry
from tests.support.bundles import FIXTURE_BUNDLE, bundle_variant, set_value
from tests.support.servers import wait_until


def archive(tmp: Path, bundle: Path, name: str = "", **kw: object) -> bytes:
    out = tmp / f"{name or bundle.name}.tar.gz"
    build_archive(bundle, out, **kw)
    return out.read_bytes()


def replace_member(data: bytes, name: str, content: bytes) -> bytes:
    """The archive with one member's bytes replaced (manifest untouched)."""
    src = tarfile.open(fileobj=io.BytesIO(data), mode="r:gz")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as out:
        for member in src:
            body = src.extractfile(member).read()
            if member.name == name:
                body = content
            member.size = len(body)
            out.addfile(member, io.BytesIO(body))
    return buf.getvalue()


@pytest.fixture
def manager(tmp_path: Path):
    mgr = BundleManager(Registry(keep=3), state=StateDir(tmp_path / "state"))
    yield mgr
    mgr.stop()


def test_a_directory_is_read_and_parsed_once_per_activation(tmp_path, manager, monkeypatch):
    """No archive round trip: each YAML file of a directory source is parsed exactly once."""
    calls: list[str] = []
    real = yamlio.load_yaml

    def counting(text: str, file: str, *args: object) -> object:
        calls.append(file)
        return real(text, file, *args)

    monkeypatch.setattr(yamlio, "load_yaml", counting)
    monkeypatch.setattr("server.bundle.archive.load_yaml", counting)
    bundle = bundle_variant(tmp_path / "once", revision="once")
    manager.activate_path(bundle)
    yaml_files = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*.yaml"))
    assert sorted(calls) == yaml_files
    data = archive(tmp_path, bundle_variant(tmp_path / "once2", revision="once2"))
    calls.clear()
    manager.activate_archive(data, origin="t")
    assert sorted(calls) == yaml_files  # an archive: verified and parsed once too


@pytest.mark.parametrize("breakage", ["invalid_utf8", "mixed_keys", "disk_full", "unexpected"])
def test_a_watched_archive_that_breaks_the_loader_is_refused_and_the_watcher_goes_on(
    tmp_path, manager, monkeypatch, breakage
):
    """Invalid UTF-8, int/str keys, ENOSPC on the state dir, a bug: refused, counted, logged; later bundles load."""
    stream = io.StringIO()
    log.configure(stream=stream)
    source = tmp_path / "watched" / "bundle.tar.gz"
    source.parent.mkdir()
    source.write_bytes(archive(tmp_path, bundle_variant(tmp_path / "w1", revision="w1")))
    manager.activate_path(source)
    manager.watch_source(str(source))
    bad = archive(tmp_path, bundle_variant(tmp_path / "w2", revision="w2"))
    if breakage == "invalid_utf8":
        bad = replace_member(bad, "data/catalogue.yaml", b"reasons: \xff\xfe\n")
    elif breakage == "mixed_keys":
        bad = replace_member(bad, "data/catalogue.yaml", b"reasons: {1: a, b: c}\n")
    elif breakage == "disk_full":

        def full(data: bytes) -> Path:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(manager.state, "store", full)
    else:
        real = manager_module.build_decider
        monkeypatch.setattr(
            manager_module, "build_decider", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom"))
        )
    wait_until(
        lambda: (source.write_bytes(bad), manager.status.failures > 0)[1],
        20,
        interval=0.5,
        message="the broken archive refused",
    )
    assert manager.registry.active().ref.revision == "w1"
    expected = {
        "invalid_utf8": "bundle_parse_error",
        "mixed_keys": "bundle_parse_error",
        "disk_full": "state_write_failed",
        "unexpected": "bundle_internal_error",
    }[breakage]
    refused = [
        json.loads(line)
        for line in stream.getvalue().splitlines()
        if '"bundle_internal_error"' in line or '"bundle_loop_error"' in line
    ]
    if breakage == "unexpected":
        assert refused
        assert refused[0]["error_type"] == "RuntimeError"
        monkeypatch.setattr(manager_module, "build_decider", real)
    assert manager.status.last_error_code == expected
    monkeypatch.undo()
    log.configure(stream=stream)
    good = archive(tmp_path, bundle_variant(tmp_path / "w3", revision="w3"))
    wait_until(
        lambda: (source.write_bytes(good), manager.registry.active().ref.revision == "w3")[1],
        20,
        interval=0.5,
        message="the watcher still loads a valid archive",
    )


def test_loader_errors_are_located_not_exceptions(tmp_path, manager):
    """The same breakages through the admin path: ErrorList with a code, never another exception."""
    good = archive(tmp_path, bundle_variant(tmp_path / "a1", revision="a1"))
    manager.activate_archive(good, origin="t")
    for content, code in (
        (b"reasons: \xff\n", "bundle_parse_error"),
        (b"reasons: {1: a, b: c}\n", "bundle_parse_error"),
    ):
        bundle = bundle_variant(tmp_path / f"a{len(content)}", revision=f"a{len(content)}")
        (bundle / "data/catalogue.yaml").write_bytes(content)
        with pytest.raises(ErrorList) as err:
            manager.activate_path(bundle)
        assert code in {e.code for e in err.value.errors}
        assert any(e.location.file == "data/catalogue.yaml" for e in err.value.errors)
    assert manager.registry.active().ref.revision == "a1"


def test_a_revision_label_is_immutable(tmp_path, manager):
    """Another bundle with a loaded label is refused with a hint to bump the revision; the loaded one stays."""
    first = bundle_variant(tmp_path / "same1", revision="same")
    manager.activate_path(first)
    digest = manager.registry.get("same").ref.digest
    changed = bundle_variant(tmp_path / "same2", revision="same")
    set_value(changed / "data/settings.yaml", ["params", "refund_window"], "48h")
    (changed / "tests/refunds.yaml").unlink()
    with pytest.raises(ErrorList) as err:
        manager.activate_path(changed)
    assert err.value.errors[0].code == "bundle_revision_reused"
    assert "bump the revision" in err.value.errors[0].message
    assert manager.registry.get("same").ref.digest == digest
    with pytest.raises(ErrorList):
        Registry.activate(manager.registry, __import__("server.registry").registry.build_decider(changed))


def test_a_lower_or_equal_serial_is_refused_and_rollback_goes_back(tmp_path):
    """Signed serials: 5 then 3 is refused (also 5 again with other content); rollback to a loaded 3 works."""
    generate_keypair(tmp_path / "k", tmp_path / "k.pub")
    mgr = BundleManager(Registry(), state=StateDir(tmp_path / "state"), verification_key=tmp_path / "k.pub")

    def signed(name: str, serial: int | None, **kw: object) -> bytes:
        out = tmp_path / f"{name}.tar.gz"
        build_archive(bundle_variant(tmp_path / name, revision=name), out, serial=serial, **kw)
        sign_archive(out, tmp_path / "k")
        return out.read_bytes()

    mgr.activate_archive(signed("s3", 3), origin="t")
    mgr.activate_archive(signed("s5", 5), origin="t")
    for name, serial in (("s2", 2), ("s5b", 5), ("none", None)):
        with pytest.raises(ErrorList) as err:
            mgr.activate_archive(signed(name, serial), origin="watched file")
        assert err.value.errors[0].code == "bundle_downgrade"
        assert "rollback" in err.value.errors[0].message
    assert mgr.registry.active().ref.revision == "s5"
    mgr.rollback("s3")
    assert mgr.registry.active().ref.revision == "s3"
    assert StateDir(tmp_path / "state").read()["revision"] == "s3"
    mgr.activate_archive(signed("s6", 6), origin="t")
    assert mgr.registry.active().ref.revision == "s6"


def test_an_expired_bundle_is_refused(tmp_path, manager):
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    data = archive(tmp_path, bundle_variant(tmp_path / "old", revision="old"), serial=1, expires=past)
    with pytest.raises(ErrorList) as err:
        manager.activate_archive(data, origin="t")
    assert err.value.errors[0].code == "bundle_expired"
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    manager.activate_archive(
        archive(tmp_path, bundle_variant(tmp_path / "new", revision="new"), serial=2, expires=future), origin="t"
    )
    assert manager.registry.active().ref.revision == "new"


def test_the_serial_is_signed(tmp_path):
    """Raising the serial in a signed manifest breaks the signature."""
    generate_keypair(tmp_path / "k", tmp_path / "k.pub")
    out = tmp_path / "b.tar.gz"
    build_archive(FIXTURE_BUNDLE, out, serial=1)
    sign_archive(out, tmp_path / "k")
    src = tarfile.open(out, mode="r:gz")
    manifest = json.loads(src.extractfile(".manifest.json").read())
    manifest["serial"] = 99
    forged = replace_member(out.read_bytes(), ".manifest.json", json.dumps(manifest).encode())
    mgr = BundleManager(Registry(), verification_key=tmp_path / "k.pub")
    with pytest.raises(ErrorList) as err:
        mgr.activate_archive(forged, origin="t")
    assert err.value.errors[0].code == "bundle_bad_signature"


def test_thread_exceptions_are_logged_as_one_json_line():
    import threading

    stream = io.StringIO()
    log.configure(stream=stream)
    thread = threading.Thread(target=lambda: 1 / 0, name="doomed")
    thread.start()
    thread.join()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(r["event"], r["thread"], r["error_type"]) for r in lines] == [
        ("thread_crashed", "doomed", "ZeroDivisionError")
    ]
    assert "Traceback" not in stream.getvalue()
