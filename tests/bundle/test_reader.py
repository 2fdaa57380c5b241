"""The archive reader: signature first, streamed within limits, only safe members; YAML without aliases."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from server.bundle.archive import build_archive, generate_keypair, open_archive, sign_archive
from server.bundle.reader import DEFAULT_LIMITS, Limits, tar_members
from server.bundle.yamlio import load_yaml
from server.errors import BundleError
from tests.support.bundles import FIXTURE_BUNDLE
from tests.support.hostile import _gz, _header, _manifest_member, _pad


def tar_gz(*members: tuple[str, bytes | None], fmt: int = tarfile.PAX_FORMAT, kind: bytes = tarfile.REGTYPE) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=fmt) as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size, info.type = len(content), kind
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def members(data: bytes, limits: Limits = DEFAULT_LIMITS) -> dict[str, bytes]:
    return dict(tar_members(data, limits))


def refused(data: bytes, limits: Limits = DEFAULT_LIMITS) -> BundleError:
    with pytest.raises(BundleError) as err:
        members(data, limits)
    return err.value


def test_files_directories_long_and_pax_names_are_read() -> None:
    """Regular files in order, directories skipped, GNU and pax long names honoured."""
    long = "policies/" + "p" * 150 + ".yaml"
    assert members(tar_gz(("a", None), ("a/x.yaml", b"x: 1\n"), (long, b"y"))) == {"a/x.yaml": b"x: 1\n", long: b"y"}
    assert members(tar_gz((long, b"y"), fmt=tarfile.GNU_FORMAT)) == {long: b"y"}


@pytest.mark.parametrize(
    ("name", "why"), [("/etc/passwd", "relative"), ("../x", "relative"), ("a/../../x", "relative")]
)
def test_unsafe_names_are_refused(name: str, why: str) -> None:
    err = refused(tar_gz((name, b"x")))
    assert err.code == "bundle_unsafe_archive"
    assert why in err.message


def test_links_and_devices_are_refused() -> None:
    for kind in (tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE):
        assert refused(tar_gz(("x", b""), kind=kind)).code == "bundle_unsafe_archive"


def test_a_name_that_appears_twice_is_refused() -> None:
    err = refused(tar_gz(("a.yaml", b"1"), ("a.yaml", b"2")))
    assert err.code == "bundle_unsafe_archive"
    assert "twice" in err.message


@pytest.mark.parametrize(
    ("limit", "data"),
    [
        ("max_files", tar_gz(*[(f"d{i}", None) for i in range(11)])),
        ("max_file_bytes", tar_gz(("a", b"x" * 101))),
        ("max_bytes", tar_gz(*[(f"f{i}", b"x" * 90) for i in range(40)])),
        ("max_name_bytes", tar_gz(("n" * 60, b"x"))),
    ],
)
def test_each_limit_is_enforced(limit: str, data: bytes) -> None:
    """Member count (directories included), file size, total bytes, name length."""
    small = Limits(max_files=10, max_file_bytes=100, max_bytes=8192, max_name_bytes=50)
    members(data)  # within the defaults
    assert refused(data, small).code == "bundle_too_large"


def test_an_oversized_long_name_header_is_refused_without_reading_it() -> None:
    data = _gz(_header("././@LongLink", 1 << 30, tarfile.GNUTYPE_LONGNAME))  # header only: 1 GiB announced
    assert refused(data).code == "bundle_too_large"


def test_truncated_or_corrupt_archives_are_refused_cleanly() -> None:
    good = tar_gz(("a", b"x" * 5000))
    assert refused(good[: len(good) // 2]).code == "bundle_bad_archive"
    assert refused(b"not gzip at all").code == "bundle_bad_archive"
    raw = bytearray(_header("a", 1) + b"x" + _pad(1) + bytes(1024))
    raw[0:1] = b"b"  # checksum no longer matches
    assert refused(_gz(bytes(raw))).code == "bundle_bad_archive"


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    tmp = tmp_path_factory.mktemp("signed")
    generate_keypair(tmp / "k", tmp / "k.pub")
    out = tmp / "b.tar.gz"
    build_archive(FIXTURE_BUNDLE, out)
    sign_archive(out, tmp / "k")
    return out, tmp / "k", tmp / "k.pub"


def test_a_signed_archive_opens_with_its_key(signed) -> None:
    out, _, pub = signed
    archive = open_archive(out.read_bytes(), pub)
    assert archive.signature is not None
    assert "policies/cancel_order.yaml" in archive.files
    assert archive.documents["manifest.yaml"]["name"] == archive.manifest["name"]


def test_the_signature_is_checked_before_any_other_member_is_read(tmp_path: Path, signed) -> None:
    """A bad signature is reported even when the very next member is corrupt: it was never read."""
    _, _, pub = signed
    generate_keypair(tmp_path / "o", tmp_path / "o.pub")
    manifest = _manifest_member({"a.yaml": "sha256:" + "0" * 64})
    sig = json.dumps({"signature": "AAAA"}).encode()
    corrupt = b"\xff" * 512  # not a tar header
    data = _gz(manifest + _header(".signature.json", len(sig)) + sig + _pad(len(sig)) + corrupt)
    with pytest.raises(BundleError) as err:
        open_archive(data, pub)
    assert err.value.code == "bundle_bad_signature"


def test_an_unsigned_archive_is_refused_before_its_yaml_is_parsed(signed) -> None:
    """With a key, an archive whose second member is not the signature is refused at once."""
    _, _, pub = signed
    bomb = b"a: &a [1]\nb: *a\n"
    data = _gz(
        _manifest_member({"a.yaml": "sha256:" + "0" * 64})
        + _header("a.yaml", len(bomb))
        + bomb
        + _pad(len(bomb))
        + bytes(1024)
    )
    with pytest.raises(BundleError) as err:
        open_archive(data, pub)
    assert err.value.code == "bundle_unsigned"


def test_the_manifest_must_come_first_and_list_every_file(signed) -> None:
    with pytest.raises(BundleError) as err:
        open_archive(tar_gz(("a.yaml", b"x: 1\n"), (".manifest.json", b"{}")))
    assert err.value.code == "bundle_bad_archive"
    assert "first" in err.value.message
    data = _gz(_manifest_member({}) + _header("extra.yaml", 1) + b"x" + _pad(1) + bytes(1024))
    with pytest.raises(BundleError) as err:
        open_archive(data)
    assert err.value.code == "bundle_digest_mismatch"
    assert "`extra.yaml`" in err.value.message


@pytest.mark.parametrize("text", ["a: &x [1, 2]\nb: *x\n", "base: &b {x: 1}\nuse:\n  <<: *b\n", "a: &x 1\n"])
def test_yaml_anchors_and_aliases_are_refused_with_their_line(text: str) -> None:
    data, errors = load_yaml(text, "policies/p.yaml")
    assert data is None
    assert errors[0].code == "bundle_parse_error"
    assert "aliases" in errors[0].message
    assert errors[0].location.file == "policies/p.yaml"
    assert errors[0].location.line in (1, 2, 4)


def test_yaml_node_count_is_limited() -> None:
    data, errors = load_yaml("a: [" + ",".join(["1"] * 200) + "]\n", "f.yaml", max_nodes=100)
    assert data is None
    assert errors[0].code == "bundle_too_large"


def test_yaml_keys_must_be_text() -> None:
    """Mixed int/str keys are a located error, not an exception later."""
    data, errors = load_yaml("a: 1\n2: b\n", "f.yaml")
    assert [(e.code, e.location.line) for e in errors] == [("bundle_parse_error", 2)]
    assert "`2`" in errors[0].message


def test_deeply_nested_yaml_is_a_located_error() -> None:
    data, errors = load_yaml("[" * 900 + "]" * 900, "f.yaml")
    assert data is None
    assert errors[0].code == "bundle_parse_error"
