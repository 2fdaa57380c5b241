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
import functools
import hashlib
import io
import json
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from server.bundle.yamlio import load_yaml, plain
from server.errors import BundleError

__all__ = [
    "MANIFEST",
    "SIGNATURE",
    "build_archive",
    "bundle_manifest",
    "generate_keypair",
    "is_archive",
    "read_archive",
    "sign_archive",
    "unpack_archive",
    "verify_archive",
]

MANIFEST = ".manifest.json"
SIGNATURE = ".signature.json"
MAX_ARCHIVE_BYTES = 16 * 1024 * 1024
MAX_MEMBER_BYTES = 2 * 1024 * 1024
MAX_MEMBERS = 1000
_INCLUDED = ("manifest.yaml", "data/*.yaml", "policies/*.yaml", "tests/*.yaml")


def canonical(data: Any) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, UTF-8."""
    return json.dumps(plain(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@functools.lru_cache(maxsize=64)
def file_digest(rel: str, content: bytes) -> str:
    """sha256 of a bundle file over its canonical JSON (raw bytes for non-YAML)."""
    if rel.endswith((".yaml", ".yml")):
        data, errors = load_yaml(content.decode("utf-8"), rel)
        if errors:
            raise BundleError(f"`{rel}`: {errors[0].message}", code="bundle_parse_error")
        return "sha256:" + hashlib.sha256(canonical(data)).hexdigest()
    return "sha256:" + hashlib.sha256(content).hexdigest()


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
    return {"format_version": 1, "name": str(meta.get("name", "")), "revision": str(meta.get("revision", "")),
            "files": digests, "digest": bundle_digest}


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


def read_archive(path: str | Path) -> dict[str, bytes]:
    """Every member of an archive, checked for size, count and path safety."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_ARCHIVE_BYTES:
            raise BundleError(f"archive larger than {MAX_ARCHIVE_BYTES} bytes", code="bundle_too_large")
        return read_archive_bytes(p.read_bytes())
    except OSError as exc:
        raise BundleError(f"cannot read archive `{path}`: {exc.strerror}", code="bundle_io_error") from None


def read_archive_bytes(data: bytes) -> dict[str, bytes]:
    """Like :func:`read_archive`, from bytes (an upload or a download)."""
    if len(data) > MAX_ARCHIVE_BYTES:
        raise BundleError(f"archive larger than {MAX_ARCHIVE_BYTES} bytes", code="bundle_too_large")
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar:
                if len(files) >= MAX_MEMBERS:
                    raise BundleError("archive has too many files", code="bundle_too_large")
                if member.isdir():
                    continue
                name = PurePosixPath(member.name)
                if not member.isfile() or name.is_absolute() or ".." in name.parts:
                    raise BundleError(f"unsafe archive member `{member.name}`", code="bundle_unsafe_archive")
                if member.size > MAX_MEMBER_BYTES:
                    raise BundleError(f"archive member `{member.name}` is too large", code="bundle_too_large")
                extracted = tar.extractfile(member)
                if extracted is None:
                    raise BundleError(f"unreadable archive member `{member.name}`", code="bundle_io_error")
                files[name.as_posix()] = extracted.read()
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:  # truncated or not gzip/tar
        raise BundleError(f"not a readable bundle archive: {exc}", code="bundle_bad_archive") from None
    if MANIFEST not in files:
        raise BundleError(f"archive has no `{MANIFEST}`", code="bundle_bad_archive")
    return files


def _archive_manifest(files: dict[str, bytes]) -> dict[str, Any]:
    try:
        manifest = json.loads(files[MANIFEST])
    except ValueError:
        raise BundleError(f"`{MANIFEST}` is not JSON", code="bundle_bad_archive") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise BundleError(f"`{MANIFEST}` has no file list", code="bundle_bad_archive")
    return manifest


def check_digests(files: dict[str, bytes]) -> dict[str, Any]:
    """Every file matches its digest and no file is missing or extra; returns the manifest."""
    manifest = _archive_manifest(files)
    listed = manifest["files"]
    present = {k for k in files if k not in (MANIFEST, SIGNATURE)}
    for rel in sorted(set(listed) - present):
        raise BundleError(f"file `{rel}` is listed in the manifest but missing", code="bundle_digest_mismatch")
    for rel in sorted(present - set(listed)):
        raise BundleError(f"file `{rel}` is not listed in the manifest", code="bundle_digest_mismatch")
    for rel in sorted(listed):
        if file_digest(rel, files[rel]) != listed[rel]:
            raise BundleError(f"file `{rel}` does not match its digest", code="bundle_digest_mismatch")
    return manifest


def generate_keypair(private_path: str | Path, public_path: str | Path) -> None:
    """Write a new Ed25519 key pair as PEM files."""
    key = Ed25519PrivateKey.generate()
    Path(private_path).write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    Path(private_path).chmod(0o600)
    Path(public_path).write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def _load_key(path: str | Path, private: bool) -> Any:
    try:
        data = Path(path).read_bytes()
        key = (serialization.load_pem_private_key(data, password=None) if private
               else serialization.load_pem_public_key(data))
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot read key `{path}`: {exc}", code="bundle_bad_key") from None
    wanted = Ed25519PrivateKey if private else Ed25519PublicKey
    if not isinstance(key, wanted):
        raise BundleError(f"key `{path}` is not an Ed25519 key", code="bundle_bad_key")
    return key


def sign_archive(path: str | Path, private_key: str | Path) -> None:
    """Add (or replace) the Ed25519 signature of an archive, after checking its digests."""
    files = read_archive(path)
    manifest = check_digests(files)
    key = _load_key(private_key, private=True)
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    files[SIGNATURE] = json.dumps({
        "algorithm": "ed25519",
        "key_id": hashlib.sha256(public).hexdigest()[:16],
        "signature": base64.b64encode(key.sign(canonical(manifest))).decode(),
    }, indent=2, sort_keys=True).encode() + b"\n"
    _write(Path(path), files)


def verify_files(files: dict[str, bytes], public_key: str | Path | None) -> dict[str, Any]:
    """Digests always; the signature too when a key is given. Returns the manifest."""
    manifest = check_digests(files)
    if public_key is None:
        return manifest
    if SIGNATURE not in files:
        raise BundleError("the bundle is not signed", code="bundle_unsigned")
    try:
        sig = json.loads(files[SIGNATURE])
        signature = base64.b64decode(sig["signature"], validate=True)
    except (ValueError, KeyError, TypeError):
        raise BundleError(f"`{SIGNATURE}` is malformed", code="bundle_bad_signature") from None
    try:
        _load_key(public_key, private=False).verify(signature, canonical(manifest))
    except InvalidSignature:
        raise BundleError("the signature does not match the bundle", code="bundle_bad_signature") from None
    return manifest


def verify_archive(path: str | Path, public_key: str | Path | None) -> dict[str, Any]:
    """Check an archive file; raises BundleError naming what is wrong."""
    return verify_files(read_archive(path), public_key)


def is_archive(path: str | Path) -> bool:
    """True for a ``.tar.gz``/``.tgz`` path."""
    return str(path).endswith((".tar.gz", ".tgz"))


def unpack_archive(files: dict[str, bytes], dest: str | Path | None = None) -> Path:
    """Write checked archive members into a directory (a new temporary one by default)."""
    root = Path(dest) if dest is not None else Path(tempfile.mkdtemp(prefix="order-policy-bundle-"))
    for rel, content in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return root
