"""Reading untrusted bundle archives: a streamed ``.tar.gz`` reader with limits.

The archive is never unpacked to disk and never decompressed ahead of need:
``tar_members`` inflates and yields one member at a time, so a caller can check
the signature over the first member before the next one is read. Everything is
bounded by :class:`Limits`: the compressed size, the decompressed bytes of the
whole stream, the member count (directories and extension headers included),
the size of one member and the length of a name, GNU long-name and pax headers
included. Only regular files and directories are accepted; a name is relative,
without ``..`` and appears once.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from server.errors import BundleError

__all__ = ["DEFAULT_LIMITS", "Limits", "read_limited", "tar_members"]

MiB = 1024 * 1024
_BLOCK = 512
_CHUNK = 64 * 1024
_EXTENSION_HEADER_SLACK = 1024  # pax records other than the path (times, ids) fit in this


@dataclass(frozen=True)
class Limits:
    """What a bundle may be at most; every source (directory or archive) is held to it."""

    max_bytes: int = 8 * MiB  # all files together (decompressed, tar headers included)
    max_file_bytes: int = 1 * MiB  # one file
    max_files: int = 1000  # archive members, directories and extension headers included
    max_name_bytes: int = 256  # one member name, long-name and pax headers included
    max_yaml_nodes: int = 50_000  # nodes (scalars, mappings, sequences) in one YAML file

    @property
    def max_archive_bytes(self) -> int:
        """The compressed size accepted: an archive never needs more than its content."""
        return self.max_bytes + 64 * 1024


DEFAULT_LIMITS = Limits()


def _too_large(message: str) -> BundleError:
    return BundleError(message, code="bundle_too_large")


def _bad(message: str) -> BundleError:
    return BundleError(f"not a readable bundle archive: {message}", code="bundle_bad_archive")


def _unsafe(name: str, why: str) -> BundleError:
    return BundleError(f"unsafe archive member `{name[:300]}`: {why}", code="bundle_unsafe_archive")


def read_limited(path: str | Path, limit: int, what: str = "archive") -> bytes:
    """The bytes of ``path``, refused without reading past ``limit``."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise BundleError(f"cannot read {what} `{path}`: {exc.strerror}", code="bundle_io_error") from None
    if len(data) > limit:
        raise _too_large(f"{what} `{path}` is larger than {limit} bytes")
    return data


class _Inflater:
    """Exact-size reads from a gzip stream, counting every decompressed byte."""

    def __init__(self, data: bytes, limit: int) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._buf = bytearray()
        self._limit = limit
        self.total = 0

    def _more(self) -> bool:
        if self._inflate.eof:  # the next gzip member, if any (`cat a.gz b.gz` is one stream)
            rest = self._inflate.unused_data
            if not rest and self._pos >= len(self._data):
                return False
            self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
            tail = rest or self._next_input()
        else:
            tail = self._inflate.unconsumed_tail
            if not tail:
                if self._pos >= len(self._data):
                    return False
                tail = self._next_input()
        try:
            out = self._inflate.decompress(tail, _CHUNK)
        except zlib.error as exc:
            raise _bad(f"not gzip data ({exc})") from None
        self.total += len(out)
        if self.total > self._limit:
            raise _too_large(f"archive content larger than {self._limit} bytes")
        self._buf += out
        return True

    def _next_input(self) -> bytes:
        chunk = self._data[self._pos : self._pos + _CHUNK]
        self._pos += len(chunk)
        return bytes(chunk)

    def read(self, size: int) -> bytes:
        while len(self._buf) < size:
            if not self._more():
                raise _bad("the archive is truncated")
        out = bytes(self._buf[:size])
        del self._buf[:size]
        return out

    def exhausted(self) -> bool:
        """True at the end of the stream; a gzip stream cut short is an error."""
        if self._buf or self._more():
            return False
        if not self._inflate.eof:
            raise _bad("the archive is truncated")
        return True

    def skip(self, size: int) -> None:
        while size > 0:
            step = min(size, _CHUNK)
            self.read(step)
            size -= step


def _padded(size: int) -> int:
    return -(-size // _BLOCK) * _BLOCK


def _number(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # base-256: only for sizes no bundle reaches
        return 1 << 62
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise _bad("a tar header has an invalid number") from None


def _checksum_ok(header: bytes) -> bool:
    stored = _number(header[148:156])
    unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:])
    signed = unsigned - 2 * sum(b for b in header[:148] + header[156:] if b >= 128)
    return stored in (unsigned, signed)


def _pax_records(data: bytes) -> dict[str, bytes]:
    """``"%d %s=%s\\n"`` records (the length counts the whole record)."""
    out: dict[str, bytes] = {}
    pos = 0
    while pos < len(data) and data[pos : pos + 1] != b"\0":
        space = data.find(b" ", pos, pos + 20)
        if space < 0:
            raise _bad("a pax header is malformed")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise _bad("a pax header is malformed") from None
        record = data[space + 1 : pos + length]
        if length <= 0 or pos + length > len(data) or not record.endswith(b"\n") or b"=" not in record:
            raise _bad("a pax header is malformed")
        key, _, value = record[:-1].partition(b"=")
        out[key.decode("utf-8", "replace")] = value
        pos += length
    return out


def _safe_name(raw: bytes, limits: Limits, *, directory: bool) -> str:
    if len(raw) > limits.max_name_bytes:
        raise _too_large(f"an archive member name is longer than {limits.max_name_bytes} bytes")
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _unsafe(raw.decode("utf-8", "replace"), "the name is not UTF-8") from None
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or "\\" in name or "\0" in name:
        raise _unsafe(name, "names must be relative paths inside the bundle")
    rel = path.as_posix()
    if rel == "." and not directory:
        raise _unsafe(name, "a file needs a name")
    return rel


def tar_members(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Iterator[tuple[str, bytes]]:
    """Yield ``(name, content)`` for each regular file of a ``.tar.gz``, in archive order.

    Raises BundleError (``bundle_too_large``, ``bundle_bad_archive``,
    ``bundle_unsafe_archive``) as soon as a limit or rule is broken; nothing
    past the member being read has been decompressed.
    """
    if len(data) > limits.max_archive_bytes:
        raise _too_large(f"archive larger than {limits.max_archive_bytes} bytes")
    stream = _Inflater(data, limits.max_bytes)
    members = 0
    seen: set[str] = set()
    long_name: bytes | None = None
    pax: dict[str, bytes] = {}
    header_limit = limits.max_name_bytes + _EXTENSION_HEADER_SLACK
    while True:
        if stream.exhausted():
            return  # no end-of-archive marker: accepted, as tar does
        header = stream.read(_BLOCK)
        if header == bytes(_BLOCK):
            return  # end of archive; whatever follows is ignored
        members += 1
        if members > limits.max_files:
            raise _too_large(f"archive has more than {limits.max_files} members")
        if not _checksum_ok(header):
            raise _bad("a tar header has a wrong checksum")
        kind = header[156:157]
        size = _number(header[124:136])
        if kind in (b"L", b"x", b"g"):  # GNU long name, pax per-file and global headers
            if size > header_limit:
                raise _too_large(f"an archive extension header is larger than {header_limit} bytes")
            body = stream.read(_padded(size))[:size]
            if kind == b"L":
                long_name = body.split(b"\0", 1)[0]
            elif kind == b"x":
                pax = _pax_records(body)
            continue
        if kind not in (b"0", b"\0", b"7", b"5"):
            raise _unsafe(
                header[:100].split(b"\0", 1)[0].decode("utf-8", "replace"),
                "only regular files and directories are allowed",
            )
        raw = header[:100].split(b"\0", 1)[0]
        if header[257:262] == b"ustar" and header[345:346] != b"\0":
            raw = header[345:500].split(b"\0", 1)[0] + b"/" + raw
        if long_name is not None:
            raw = long_name
        if "path" in pax:
            raw = pax["path"]
        if "size" in pax:
            try:
                size = int(pax["size"])
            except ValueError:
                raise _bad("a pax header has an invalid size") from None
        long_name, pax = None, {}
        directory = kind == b"5"
        name = _safe_name(raw.rstrip(b"/") if directory else raw, limits, directory=directory)
        if directory:
            stream.skip(_padded(size))
            continue
        if size > limits.max_file_bytes:
            raise _too_large(f"archive member `{name}` is larger than {limits.max_file_bytes} bytes")
        if name in seen:
            raise _unsafe(name, "the name appears twice")
        seen.add(name)
        content = stream.read(_padded(size))[:size]
        yield name, content
