"""Bundle archives: build, sign, verify and unpack ``.tar.gz`` bundles.

An archive holds the bundle's files plus ``.manifest.json``: the bundle name,
revision and the sha256 of every file over its canonical JSON (sorted keys, no
whitespace; OPA's scheme), so reformatting a YAML file does not change its
digest. ``sign`` adds ``.signature.json``: an Ed25519 signature over the
canonical JSON of ``.manifest.json``. ``verify`` checks the signature, every
file against its digest, and that no file is missing or extra.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from server.bundle.reader import DEFAULT_LIMITS, Limits, read_limited, tar_members
from server.bundle.yamlio import decode_text, load_yaml, plain
from server.errors import BundleError

__all__ = [
    "MANIFEST",
    "SIGNATURE",
    "build_archive",
    "bundle_manifest",
    "generate_keypair",
    "VerifiedArchive",
    "digest_of",
    "is_archive",
    "open_archive",
    "read_archive",
    "sign_archive",
    "unpack_archive",
    "verify_archive",
]

MANIFEST = ".manifest.json"
SIGNATURE = ".signature.json"
_INCLUDED = ("manifest.yaml", "data/*.yaml", "policies/*.yaml", "tests/*.yaml")


def canonical(data: Any) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, UTF-8."""
    return json.dumps(plain(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest_of(rel: str, content: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[str, Any]:
    """(sha256 of a bundle file over its canonical JSON, its parsed document); raw bytes for non-YAML."""
    if rel.endswith((".yaml", ".yml")):
        text, errors = decode_text(content, rel)
        data = None
        if text is not None:
            data, errors = load_yaml(text, rel, limits.max_yaml_nodes)
        if errors:
            raise BundleError(f"`{rel}`: {errors[0].message}", code=errors[0].code, location=errors[0].location)
        return "sha256:" + hashlib.sha256(canonical(data)).hexdigest(), data
    return "sha256:" + hashlib.sha256(content).hexdigest(), None


def file_digest(rel: str, content: bytes) -> str:
    """sha256 of a bundle file over its canonical JSON (raw bytes for non-YAML)."""
    return digest_of(rel, content)[0]


def bundle_manifest(bundle_dir: str | Path) -> dict[str, Any]:
    """The archive manifest of a bundle directory (its digests and bundle digest)."""
    return _manifest(_bundle_files(Path(bundle_dir)))


def _bundle_files(root: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for pattern in _INCLUDED:
        for path in sorted(root.glob(pattern)):
            if path.is_file():
                files[path.relative_to(root).as_posix()] = path.read_bytes()
    if "manifest.yaml" not in files:
        raise BundleError(f"`{root}` has no manifest.yaml", code="bundle_missing_file")
    return files


def _manifest(files: dict[str, bytes]) -> dict[str, Any]:
    meta, errors = load_yaml(files["manifest.yaml"].decode("utf-8"), "manifest.yaml")
    if errors or not isinstance(meta, dict):
        raise BundleError("manifest.yaml is not a mapping", code="bundle_manifest_error")
    digests = {rel: file_digest(rel, content) for rel, content in sorted(files.items())}
    bundle_digest = hashlib.sha256(canonical(digests)).hexdigest()
    return {
        "format_version": 1,
        "name": str(meta.get("name", "")),
        "revision": str(meta.get("revision", "")),
        "files": digests,
        "digest": bundle_digest,
    }


def _add(tar: tarfile.TarFile, name: str, content: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    info.mode = 0o644
    info.mtime = 0  # reproducible archives
    tar.addfile(info, io.BytesIO(content))


def _write(path: Path, files: dict[str, bytes]) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            _add(tar, name, files[name])
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)


def build_archive(bundle_dir: str | Path, out: str | Path) -> dict[str, Any]:
    """Write ``out`` (.tar.gz) from a bundle directory; returns the archive manifest."""
    files = _bundle_files(Path(bundle_dir))
    manifest = _manifest(files)
    files[MANIFEST] = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    _write(Path(out), files)
    return manifest


@dataclass
class VerifiedArchive:
    """An archive whose manifest (and signature, when a key was given) and digests hold."""

    manifest: dict[str, Any]
    manifest_bytes: bytes
    files: dict[str, bytes]  # the bundle's files, without the manifest and signature
    documents: dict[str, Any]  # parsed YAML files (shared: never mutate)
    signature: bytes | None = None


def _parse_manifest(content: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(content)
    except (ValueError, RecursionError):
        raise BundleError(f"`{MANIFEST}` is not JSON", code="bundle_bad_archive") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise BundleError(f"`{MANIFEST}` has no file list", code="bundle_bad_archive")
    for key in ("name", "revision", "digest"):
        if not isinstance(manifest.get(key, ""), str):
            raise BundleError(f"`{MANIFEST}`: `{key}` is not text", code="bundle_bad_archive")
    return cast("dict[str, Any]", manifest)  # a JSON object, checked above


def _check_signature(manifest: dict[str, Any], content: bytes, public_key: str | Path) -> None:
    try:
        sig = json.loads(content)
        signature = base64.b64decode(sig["signature"], validate=True)
    except (ValueError, KeyError, TypeError, RecursionError):
        raise BundleError(f"`{SIGNATURE}` is malformed", code="bundle_bad_signature") from None
    try:
        _load_key(public_key, private=False).verify(signature, canonical(manifest))
    except InvalidSignature:
        raise BundleError("the signature does not match the bundle", code="bundle_bad_signature") from None


def open_archive(data: bytes, public_key: str | Path | None = None, limits: Limits = DEFAULT_LIMITS) -> VerifiedArchive:
    """Read an archive signature first: nothing but ``.manifest.json`` (and
    ``.signature.json``) is decompressed before the signature holds, and no file
    is parsed before it is known to be listed in the signed manifest.

    Then every file is checked against its digest, none missing or extra. The
    archive is streamed within ``limits``. Raises BundleError.
    """
    members = tar_members(data, limits)
    first = next(members, None)
    if first is None or first[0] != MANIFEST:
        raise BundleError(
            f"`{MANIFEST}` must be the archive's first file (build it with `order-policy bundle build`)",
            code="bundle_bad_archive",
        )
    manifest_bytes = first[1]
    manifest = _parse_manifest(manifest_bytes)
    signature = None
    if public_key is not None:
        second = next(members, None)
        if second is None or second[0] != SIGNATURE:
            raise BundleError("the bundle is not signed", code="bundle_unsigned")
        _check_signature(manifest, second[1], public_key)
        signature = second[1]
    listed: dict[str, str] = manifest["files"]
    files: dict[str, bytes] = {}
    for name, content in members:
        if name == SIGNATURE and signature is None and not files:
            signature = content
            continue
        if name not in listed:
            raise BundleError(f"file `{name}` is not listed in the manifest", code="bundle_digest_mismatch")
        files[name] = content
    for rel in sorted(set(listed) - set(files)):
        raise BundleError(f"file `{rel}` is listed in the manifest but missing", code="bundle_digest_mismatch")
    documents: dict[str, Any] = {}
    for rel in sorted(listed):
        digest, documents[rel] = digest_of(rel, files[rel], limits)
        if digest != listed[rel]:
            raise BundleError(f"file `{rel}` does not match its digest", code="bundle_digest_mismatch")
    return VerifiedArchive(manifest, manifest_bytes, files, documents, signature)


def read_archive(
    path: str | Path, public_key: str | Path | None = None, limits: Limits = DEFAULT_LIMITS
) -> VerifiedArchive:
    """:func:`open_archive` of a file (refused unread when larger than the limits allow)."""
    return open_archive(read_limited(path, limits.max_archive_bytes), public_key, limits)


def generate_keypair(private_path: str | Path, public_path: str | Path) -> None:
    """Write a new Ed25519 key pair as PEM files."""
    key = Ed25519PrivateKey.generate()
    Path(private_path).write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    Path(private_path).chmod(0o600)
    Path(public_path).write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _load_key(path: str | Path, private: bool) -> Any:
    try:
        data = Path(path).read_bytes()
        key = (
            serialization.load_pem_private_key(data, password=None)
            if private
            else serialization.load_pem_public_key(data)
        )
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot read key `{path}`: {exc}", code="bundle_bad_key") from None
    wanted = Ed25519PrivateKey if private else Ed25519PublicKey
    if not isinstance(key, wanted):
        raise BundleError(f"key `{path}` is not an Ed25519 key", code="bundle_bad_key")
    return key


def sign_archive(path: str | Path, private_key: str | Path) -> None:
    """Add (or replace) the Ed25519 signature of an archive, after checking its digests."""
    archive = read_archive(path)
    key = _load_key(private_key, private=True)
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    files = dict(archive.files)
    files[MANIFEST] = archive.manifest_bytes
    files[SIGNATURE] = (
        json.dumps(
            {
                "algorithm": "ed25519",
                "key_id": hashlib.sha256(public).hexdigest()[:16],
                "signature": base64.b64encode(key.sign(canonical(archive.manifest))).decode(),
            },
            indent=2,
            sort_keys=True,
        ).encode()
        + b"\n"
    )
    _write(Path(path), files)


def verify_archive(path: str | Path, public_key: str | Path | None, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Check an archive file; returns its manifest, raises BundleError naming what is wrong."""
    return read_archive(path, public_key, limits).manifest


def is_archive(path: str | Path) -> bool:
    """True for a ``.tar.gz``/``.tgz`` path."""
    return str(path).endswith((".tar.gz", ".tgz"))


def unpack_archive(files: dict[str, bytes], dest: str | Path) -> Path:
    """Write checked archive members into a directory."""
    root = Path(dest)
    for rel, content in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return root
