"""The persisted bundle state: ``revisions/<sha256>.tar.gz``, ``active.json``, ``shadow.json``, ``workers/``.

Records are written atomically (temp file, fsync, rename, fsync of the directory).
A record read back is checked before it is trusted: a damaged or foreign one
(missing fields, an archive name that is not ``<sha256>.tar.gz`` inside
``revisions/``) is logged once and ignored, so the source is served instead.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from server.decide import Decider

__all__ = ["ACTIVE", "SHADOW", "StateDir", "write_atomic"]

log = logging.getLogger("order_policy.lifecycle")
ACTIVE = "active.json"
SHADOW = "shadow.json"
_ARCHIVE_NAME = re.compile(r"^[0-9a-f]{64}\.tar\.gz$")
_MAX_RECORD_BYTES = 64 * 1024


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` holds the old or the new content, never a mix."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dirfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


class StateDir:
    """The persisted bundle state of one service (shared by its workers)."""

    def __init__(self, path: str | Path, keep: int = 5) -> None:
        self.path = Path(path)
        self.revisions = self.path / "revisions"
        self.revisions.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self._reported: set[tuple[str, bytes]] = set()  # damaged records already logged

    def store(self, archive: bytes) -> Path:
        """Keep an archive by its content digest (idempotent)."""
        target = self.revisions / f"{hashlib.sha256(archive).hexdigest()}.tar.gz"
        if not target.exists():
            write_atomic(target, archive)
        return target

    def _point(self, name: str, decider: Decider, archive: Path) -> None:
        record = {
            "name": decider.ref.name,
            "revision": decider.ref.revision,
            "digest": decider.ref.digest,
            "archive": archive.name,
            "at": _now(),
        }
        write_atomic(self.path / name, json.dumps(record, indent=2).encode())

    def set_active(self, decider: Decider, archive: Path) -> None:
        """Record the active revision (atomic)."""
        self._point(ACTIVE, decider, archive)
        self._prune()

    def set_shadow(self, decider: Decider, archive: Path) -> None:
        """Record the shadow candidate (atomic)."""
        self._point(SHADOW, decider, archive)

    def clear_shadow(self) -> None:
        """Forget the shadow candidate."""
        with contextlib.suppress(FileNotFoundError):
            (self.path / SHADOW).unlink()

    def report_worker(self, decider: Decider) -> None:
        """Record which revision this process serves (``workers/<pid>.json``)."""
        workers = self.path / "workers"
        workers.mkdir(exist_ok=True)
        record = {"pid": os.getpid(), "revision": decider.ref.revision, "digest": decider.ref.digest, "at": _now()}
        write_atomic(workers / f"{os.getpid()}.json", json.dumps(record).encode())

    def read(self, name: str = ACTIVE) -> dict[str, Any] | None:
        """The record ``active.json`` (or ``shadow.json``); None when absent, damaged or pointing outside."""
        path = self.path / name
        try:
            with open(path, "rb") as f:
                raw = f.read(_MAX_RECORD_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._damaged(name, b"", f"unreadable: {exc.strerror}")
            return None
        problem = _problem(raw)
        if problem is None:
            record = json.loads(raw)
            if (self.revisions / record["archive"]).is_file():
                return record
            problem = f"archive `{record['archive']}` is missing"
        self._damaged(name, raw, problem)
        return None

    def _damaged(self, name: str, raw: bytes, problem: str) -> None:
        key = (name, raw)
        if key not in self._reported:
            self._reported.add(key)
            log.warning(
                "state_record_ignored",
                extra={"fields": {"record": name, "problem": problem, "state_dir": str(self.path)}},
            )

    def archive_path(self, record: dict[str, Any]) -> Path:
        """The stored archive a record names (always inside ``revisions/``)."""
        name = str(record.get("archive", ""))
        if not _ARCHIVE_NAME.match(name):
            raise ValueError(f"not a stored archive name: `{name[:100]}`")
        return self.revisions / name

    def _prune(self) -> None:
        keep = {r["archive"] for r in (self.read(ACTIVE), self.read(SHADOW)) if r}
        stored = sorted(self.revisions.glob("*.tar.gz"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in stored[self.keep :]:
            if old.name not in keep:
                with contextlib.suppress(FileNotFoundError):
                    old.unlink()


def _problem(raw: bytes) -> str | None:
    """What is wrong with a state record, or None when it can be trusted."""
    if len(raw) > _MAX_RECORD_BYTES:
        return "larger than a record can be"
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):
        return "not JSON"
    if not isinstance(record, dict):
        return "not a JSON object"
    for key in ("revision", "digest", "archive"):
        if not isinstance(record.get(key), str) or not record[key]:
            return f"no `{key}`"
    if not _ARCHIVE_NAME.match(record["archive"]):
        return "`archive` is not a stored archive name (paths never leave the state directory)"
    return None
