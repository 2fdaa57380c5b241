"""A bundle's files read once into memory: the single input of loading, testing and archiving.

``read_bundle`` turns any source into :class:`BundleFiles`: a directory is read
directly (within the limits), an archive (a path or bytes) is verified once,
signature first (``server.bundle.archive.open_archive``). Each YAML file is
parsed exactly once here; loading, the bundle's own cases and archive building
all use these documents.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.bundle.archive import canonical, content_digest, is_archive, open_archive, parse_file
from server.bundle.reader import DEFAULT_LIMITS, Limits, read_limited
from server.errors import BundleError, ErrorList, Location, PolicyError

__all__ = ["INCLUDED", "BundleFiles", "Source", "read_bundle", "read_directory"]

INCLUDED = ("manifest.yaml", "data/*.yaml", "policies/*.yaml", "tests/*.yaml")


@dataclass
class BundleFiles:
    """Every file of one bundle, its parsed YAML, the read errors and the archive manifest."""

    origin: str
    files: dict[str, bytes]
    documents: dict[str, Any]  # rel -> parsed YAML (shared: never mutate); absent when it failed
    manifest: dict[str, Any]  # name, revision, files (digests), digest; plus serial/expires when signed
    errors: list[PolicyError] = field(default_factory=list)
    signed: bool = False
    directory: Path | None = None  # where the files are, for a directory source

    def names(self, folder: str) -> list[str]:
        """The ``folder/*.yaml`` files, sorted (direct children only)."""
        prefix = folder.rstrip("/") + "/"
        return sorted(
            r for r in self.files if r.startswith(prefix) and "/" not in r[len(prefix) :] and r.endswith(".yaml")
        )


Source = str | Path | bytes | BundleFiles


def _manifest(documents: dict[str, Any], digests: dict[str, str]) -> dict[str, Any]:
    meta = documents.get("manifest.yaml")
    meta = meta if isinstance(meta, dict) else {}
    return {
        "format_version": 1,
        "name": str(meta.get("name", "")),
        "revision": str(meta.get("revision", "")),
        "files": dict(sorted(digests.items())),
        "digest": hashlib.sha256(canonical(digests)).hexdigest(),
    }


def read_directory(root: str | Path, limits: Limits = DEFAULT_LIMITS) -> BundleFiles:
    """Read a bundle directory within ``limits``; parse and digest every YAML file once.

    Problems with single files are collected (located) in ``errors``; a missing
    directory or a broken limit raises ErrorList.
    """
    root = Path(root)
    if not root.is_dir():
        raise ErrorList([BundleError(f"bundle directory `{root}` does not exist", code="bundle_io_error")])
    paths = [p for pattern in INCLUDED for p in sorted(root.glob(pattern)) if p.is_file()]
    if len(paths) > limits.max_files:
        raise ErrorList([BundleError(f"the bundle has more than {limits.max_files} files", code="bundle_too_large")])
    files: dict[str, bytes] = {}
    documents: dict[str, Any] = {}
    digests: dict[str, str] = {}
    errors: list[PolicyError] = []
    total = 0
    for path in paths:
        rel = path.relative_to(root).as_posix()
        try:
            content = read_limited(path, limits.max_file_bytes, "file")
        except BundleError as exc:
            errors.append(BundleError(exc.message, code=exc.code, location=Location(rel)))
            continue
        total += len(content)
        if total > limits.max_bytes:
            raise ErrorList(
                [
                    BundleError(
                        f"the bundle's files are larger than {limits.max_bytes} bytes together", code="bundle_too_large"
                    )
                ]
            )
        files[rel] = content
        data, problems = parse_file(rel, content, limits)
        if problems:
            errors.extend(problems)
            continue
        documents[rel] = data
        digests[rel] = content_digest(rel, content, data)
    return BundleFiles(str(root), files, documents, _manifest(documents, digests), errors, directory=root)


def read_bundle(
    source: Source, *, verification_key: str | Path | None = None, limits: Limits = DEFAULT_LIMITS
) -> BundleFiles:
    """Any source as :class:`BundleFiles`: a directory read directly, an archive (path or bytes)
    verified once, signature first. Raises ErrorList when the source cannot be read at all."""
    if isinstance(source, BundleFiles):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _from_archive(bytes(source), "upload", verification_key, limits)
    if is_archive(source):
        try:
            data = read_limited(source, limits.max_archive_bytes)
        except BundleError as exc:
            raise ErrorList([exc]) from None
        return _from_archive(data, str(source), verification_key, limits)
    if verification_key is not None:
        raise ErrorList(
            [BundleError("a directory bundle cannot be verified: build and sign an archive", code="bundle_unsigned")]
        )
    return read_directory(source, limits)


def _from_archive(data: bytes, origin: str, key: str | Path | None, limits: Limits) -> BundleFiles:
    try:
        archive = open_archive(data, key, limits)
    except BundleError as exc:
        raise ErrorList([exc]) from None
    return BundleFiles(
        origin,
        archive.files,
        archive.documents,
        archive.manifest,
        signed=archive.signature is not None and key is not None,
    )
