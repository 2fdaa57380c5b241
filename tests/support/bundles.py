"""Fixture bundles for the engineering tests, and structured edits to make variants.

The engineering tests never read the live bundles under ``rules/`` (a policy owner may
change them at any time): they run on ``tests/fixtures/bundles/cancellation-fixture``, a
frozen copy with its own cases and goldens, and on variants of it made by editing the
YAML as data (``edit_yaml``), never by replacing text.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from server.bundle.yamlio import load_yaml, plain

__all__ = [
    "FIXTURE_BUNDLE",
    "FIXTURES",
    "GOLDENS",
    "LIVE_BUNDLES",
    "ROOT",
    "copy_bundle",
    "bundle_variant",
    "edit_yaml",
    "read_yaml",
    "set_revision",
    "set_value",
    "write_yaml",
]

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
FIXTURE_BUNDLE = FIXTURES / "bundles" / "cancellation-fixture"
GOLDENS = FIXTURES / "goldens"
# Every bundle a policy owner ships: only their own cases are run against them.
LIVE_BUNDLES = sorted(p.parent for p in (ROOT / "rules").glob("*/manifest.yaml"))


def copy_bundle(dest: Path, source: Path = FIXTURE_BUNDLE) -> Path:
    """A private copy of ``source`` (the fixture bundle by default) at ``dest``."""
    shutil.copytree(source, dest)
    return dest


def read_yaml(path: Path) -> Any:
    """The YAML document at ``path`` as plain data, read as the bundle loader reads it
    (YAML 1.2 booleans: ``on:`` is a key)."""
    data, errors = load_yaml(path.read_text(encoding="utf-8"), str(path))
    if errors:
        raise ValueError(f"{path}: {errors[0]}")
    return plain(data)


def write_yaml(path: Path, data: Any) -> None:
    """Write ``data`` as YAML the bundle loader reads back identically."""
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1000), encoding="utf-8")


def edit_yaml(path: Path, change: Callable[[Any], Any]) -> Any:
    """Load ``path``, apply ``change`` to the data (in place, or return a replacement), write it."""
    data = read_yaml(path)
    result = change(data)
    write_yaml(path, data if result is None else result)
    return data if result is None else result


def set_value(path: Path, keys: tuple[Any, ...] | list[Any], value: Any) -> Any:
    """Set ``data[k1][k2]...`` in the YAML file at ``path``; KeyError when a key is missing
    (so a test never silently edits nothing). Returns the old value."""
    keys = list(keys)
    old: list[Any] = []

    def change(data: Any) -> None:
        node = data
        for key in keys[:-1]:
            node = node[key]
        old.append(node[keys[-1]])
        node[keys[-1]] = value

    edit_yaml(path, change)
    return old[0]


def set_revision(bundle: Path, revision: str) -> None:
    """Give ``bundle`` another manifest revision."""
    set_value(bundle / "manifest.yaml", ["revision"], revision)


def bundle_variant(
    dest: Path, *, revision: str | None = None, settings: dict[str, Any] | None = None, source: Path = FIXTURE_BUNDLE
) -> Path:
    """A copy of ``source`` with another revision and/or settings values, edited as data."""
    copy_bundle(dest, source)
    if revision is not None:
        set_revision(dest, revision)
    for key, value in (settings or {}).items():
        set_value(dest / "data" / "settings.yaml", [key], value)
    return dest
