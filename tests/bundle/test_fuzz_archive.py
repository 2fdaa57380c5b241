"""Fuzzing archives: random tar structures and corrupted bytes are refused or loaded, never a
crash, and never more memory than the limits allow.

A short run is part of ``make test``; ``make fuzz`` runs these with many more examples.
"""

from __future__ import annotations

import io
import tarfile
import tracemalloc
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.bundle.archive import open_archive
from server.bundle.reader import Limits, tar_members
from server.errors import BundleError
from tests.support.fuzz import examples

pytestmark = pytest.mark.fuzz

SMALL = Limits(max_bytes=64 * 1024, max_file_bytes=16 * 1024, max_files=20, max_name_bytes=64, max_yaml_nodes=500)
FUZZ = settings(max_examples=examples(80), deadline=None, suppress_health_check=[HealthCheck.too_slow])

names = st.sampled_from(
    [
        ".manifest.json",
        ".signature.json",
        "manifest.yaml",
        "data/vocabulary.yaml",
        "policies/p.yaml",
        "tests/t.yaml",
        "../up",
        "/abs",
        "a/../../b",
        "./x",
        "x/",
        ".",
        "d" * 70,
        "n" * 300,
        "caf\u00e9.yaml",
        "a\\b",
    ]
) | st.text(min_size=1, max_size=20)
kinds = st.sampled_from(
    [
        tarfile.REGTYPE,
        tarfile.AREGTYPE,
        tarfile.DIRTYPE,
        tarfile.SYMTYPE,
        tarfile.LNKTYPE,
        tarfile.FIFOTYPE,
        tarfile.CHRTYPE,
        tarfile.CONTTYPE,
    ]
)
contents = st.binary(max_size=300) | st.sampled_from(
    [b"a: &x [1]\nb: *x\n", b"{}", b'{"files": {}}', b"x: 1\n", b"\xff\xfe"]
)
members = st.lists(st.tuples(names, kinds, contents, st.integers(0, 3)), max_size=12)
formats = st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])


def build(entries: list[tuple[str, bytes, bytes, int]], fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, kind, content, repeat in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            body = content * (1 + repeat * 100) if kind in (tarfile.REGTYPE, tarfile.AREGTYPE) else b""
            info.size = len(body)
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = "target"
            try:
                tar.addfile(info, io.BytesIO(body))
            except ValueError:  # a name the format cannot hold: the writer refuses it, nothing to read
                continue
    return buf.getvalue()


def gz(raw: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return c.compress(raw) + c.flush()


def read_all(data: bytes) -> None:
    """Stream every member, then open it as a bundle archive: BundleError or success only."""
    try:
        for _ in tar_members(data, SMALL):
            pass
    except BundleError as exc:
        assert exc.code.startswith("bundle_")
        assert "\n" not in exc.message
    try:
        open_archive(data, None, SMALL)
    except BundleError as exc:
        assert exc.code.startswith("bundle_")
        assert "\n" not in exc.message


def bounded(data: bytes) -> None:
    tracemalloc.start()
    try:
        read_all(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * SMALL.max_bytes + len(data) * 4, peak


@FUZZ
@given(entries=members, fmt=formats)
def test_random_tar_structures_are_refused_or_read(entries, fmt) -> None:
    bounded(gz(build(entries, fmt)))


@FUZZ
@given(
    entries=members,
    fmt=formats,
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
    compressed=st.booleans(),
)
def test_corrupted_archives_are_refused_or_read(entries, fmt, flips, compressed) -> None:
    """Bytes overwritten in the tar stream (then compressed) or in the gzip stream itself."""
    raw = bytearray(build(entries, fmt) or bytes(1024))
    if not compressed:
        for at, value in flips:
            raw[at % len(raw)] = value
        bounded(gz(bytes(raw)))
    else:
        data = bytearray(gz(bytes(raw)))
        for at, value in flips:
            data[at % len(data)] = value
        bounded(bytes(data))


@FUZZ
@given(data=st.binary(max_size=2000))
def test_arbitrary_bytes_are_refused(data) -> None:
    bounded(data)
