"""Reading a bundle: files -> parsed documents -> a typed :class:`Bundle`.

A bundle is a directory::

    manifest.yaml               name, revision, description, owner, format_version
    data/vocabulary.yaml        statuses per method, aliases, appointment statuses, sets
    data/catalogue.yaml         reason and follow-up codes with message templates, endpoints
    data/settings.yaml          shipping time zone and cut-off, calendars, params
    policies/*.yaml             one rules file per action
    tests/*.yaml                the bundle's own test cases (read by ``server.cases``)

Every file is checked against its JSON Schema (``server/schemas``); every error
of every file is collected. Semantic checks live in ``server.validate``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jsonschema

from server.bundle.archive import is_archive
from server.bundle.files import BundleFiles, Source, read_bundle
from server.bundle.reader import DEFAULT_LIMITS, Limits
from server.bundle.yamlio import LineDict, line_of, load_yaml, plain
from server.errors import BundleError, ErrorList, Location, PolicyError, ValidationError, did_you_mean

__all__ = [
    "Bundle",
    "BundleFiles",
    "Limits",
    "Entry",
    "Policy",
    "Rule",
    "Settings",
    "Source",
    "Vocabulary",
    "bundle_directory",
    "checked_yaml",
    "load_bundle",
    "parse_duration",
    "read_bundle",
]

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DURATION = re.compile(r"^(-?[0-9]+)(s|m|h|d)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """``"24h"`` -> 86400 seconds."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(text)
    return int(m.group(1)) * _UNIT_SECONDS[m.group(2)]


@dataclass(frozen=True)
class Vocabulary:
    """What the bundle knows: statuses per method, aliases, appointment values, sets."""

    top_statuses: tuple[str, ...]
    methods: dict[str, frozenset[str]]
    aliases: dict[str, str]
    appointment_statuses: tuple[str, ...]
    appointment_providers: tuple[str, ...]
    sets: dict[str, tuple[str, ...]]

    def all_statuses(self) -> list[str]:
        """Every known detailed status, canonical spellings and aliases, sorted."""
        known = {s for statuses in self.methods.values() for s in statuses}
        return sorted(known | set(self.aliases))


@dataclass(frozen=True)
class Settings:
    """Time zone, shipping cut-off, business-day calendar and named params."""

    time_zone: ZoneInfo
    cutoff: dt.time
    business_days: frozenset[int]
    holidays: frozenset[dt.date]
    params: dict[str, Any]
    calendar: str = ""  # the name of the calendar in `calendars` that `shipping.calendar` picks

    @functools.cached_property
    def calendar_end(self) -> dt.date | None:
        """The last day the business-day calendar knows: 31 December of its last year of
        holidays (None for a calendar without holidays, which never ends). Computed once:
        every decision that estimates a ship day asks."""
        return dt.date(max(self.holidays).year, 12, 31) if self.holidays else None


@dataclass(frozen=True)
class Entry:
    """A reason or follow-up: message template and, where one applies, an endpoint."""

    code: str
    message: str
    http_method: str = ""
    path: str = ""
    location: Location = Location()


@dataclass(frozen=True)
class Rule:
    """One rule of a policy, as written (conditions are compiled later)."""

    id: str
    effect: str
    when: dict[str, Any]
    on: str = "any"
    description: str = ""
    reasons: tuple[str, ...] = ()
    follow_ups: tuple[str, ...] = ()
    error_field: str = ""
    error_message: str = ""
    location: Location = Location()
    raw: Any = None


@dataclass(frozen=True)
class Policy:
    """The rules for one action and how their effects combine."""

    action: str
    combining: str
    default_reason: str
    rules: tuple[Rule, ...]
    location: Location = Location()


@dataclass
class Bundle:
    """A loaded (not yet validated) bundle."""

    root: Path
    name: str
    revision: str
    description: str
    owner: str
    vocabulary: Vocabulary
    settings: Settings
    reasons: dict[str, Entry]
    follow_ups: dict[str, Entry]
    policies: dict[str, Policy]
    digest: str
    file_digests: dict[str, str] = field(default_factory=dict)
    raw_settings: Any = None
    serial: int | None = None  # the signed archive's serial (None for a directory)
    expires: str | None = None  # the signed archive's expiry (RFC 3339), if any


@cache
def schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of one file kind (manifest, vocabulary, ... cases)."""
    text = resources.files("server.schemas").joinpath(f"{kind}.schema.json").read_text()
    return json.loads(text)  # type: ignore[no-any-return]


def schema_errors(data: Any, kind: str, file: str) -> list[PolicyError]:
    """Check ``data`` against the kind's schema; one error per problem, with its line."""
    from server.schema_messages import schema_error  # names rules and cases, says what is allowed

    validator = jsonschema.Draft202012Validator(schema(kind))
    return [schema_error(err, data, file) for err in validator.iter_errors(plain(data))]


def checked_yaml(text: str, file: str, kind: str) -> tuple[Any, list[PolicyError]]:
    """Parse a document and check it against its kind's schema: (data, every error)."""
    data, errors = load_yaml(text, file)
    if data is None or errors:
        return data, list(errors)
    return data, schema_errors(data, kind, file)


class _Reader:
    """Collects the schema-checked documents and every error of one bundle."""

    def __init__(self, files: BundleFiles) -> None:
        self.files = files
        self.errors: list[PolicyError] = list(files.errors)

    def read(self, rel: str, kind: str, *, required: bool = True) -> Any:
        if rel not in self.files.files:
            if required:
                self.errors.append(
                    BundleError(f"missing file `{rel}`", code="bundle_missing_file", location=Location(rel))
                )
            return None
        data = self.files.documents.get(rel)
        if data is None:
            if not any(e.location.file == rel for e in self.files.errors):
                self.errors.append(BundleError("empty file", code="bundle_parse_error", location=Location(rel)))
            return None
        errors = schema_errors(data, kind, rel)
        self.errors.extend(errors)
        return None if errors else data


@contextlib.contextmanager
def bundle_directory(
    path: str | Path, *, verification_key: str | Path | None = None, limits: Limits = DEFAULT_LIMITS
) -> Iterator[Path]:
    """The bundle as a directory on disk, for tools that show its files: a directory itself, or
    an archive read as every source is (verified once, signature first) and written to a
    temporary directory for the duration. Raises ErrorList."""
    if not is_archive(path):
        if verification_key is not None:
            read_bundle(path, verification_key=verification_key, limits=limits)  # refuses it: unsigned
        yield Path(path)
        return
    files = read_bundle(path, verification_key=verification_key, limits=limits)
    with tempfile.TemporaryDirectory(prefix="order-policy-bundle-") as tmp:
        for rel, content in files.files.items():
            target = Path(tmp) / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        yield Path(tmp)


def load_bundle(
    source: Source, *, verification_key: str | Path | None = None, limits: Limits = DEFAULT_LIMITS
) -> Bundle:
    """Read and schema-check a bundle; raises :class:`ErrorList` with every error.

    ``source`` is a directory (read directly), an archive path or bytes (verified
    once, signature first when ``verification_key`` is given) or files already read
    (:func:`read_bundle`). Semantic checks are ``server.validate.validate``.
    """
    files = read_bundle(source, verification_key=verification_key, limits=limits)
    r = _Reader(files)
    manifest = r.read("manifest.yaml", "manifest")
    vocab_doc = r.read("data/vocabulary.yaml", "vocabulary")
    settings_doc = r.read("data/settings.yaml", "settings")
    catalogue_doc = r.read("data/catalogue.yaml", "catalogue")
    policy_files = files.names("policies")
    if not policy_files:
        r.errors.append(
            BundleError("no policy files in `policies/`", code="bundle_missing_file", location=Location("policies"))
        )
    policy_docs = [(rel, r.read(rel, "policy")) for rel in policy_files]
    settings = _settings(settings_doc, r.errors) if settings_doc is not None else None
    policies = _policies(policy_docs, r.errors)
    if r.errors or manifest is None or vocab_doc is None or settings is None or catalogue_doc is None:
        raise ErrorList(r.errors or [BundleError("bundle is incomplete", code="bundle_io_error")])
    return Bundle(
        root=files.directory or Path(files.origin),
        name=manifest["name"],
        revision=str(manifest["revision"]),
        description=manifest["description"],
        owner=manifest["owner"],
        vocabulary=_vocabulary(vocab_doc),
        settings=settings,
        reasons=_entries(catalogue_doc, "reasons"),
        follow_ups=_entries(catalogue_doc, "follow_ups"),
        policies=policies,
        digest=files.manifest["digest"],
        file_digests=files.manifest["files"],
        raw_settings=settings_doc,
        serial=files.manifest.get("serial"),
        expires=files.manifest.get("expires"),
    )


def _vocabulary(doc: LineDict) -> Vocabulary:
    return Vocabulary(
        top_statuses=tuple(doc["top_statuses"]),
        methods={m: frozenset(v["statuses"]) for m, v in doc["methods"].items()},
        aliases=dict(doc.get("aliases") or {}),
        appointment_statuses=tuple(doc["appointment_statuses"]),
        appointment_providers=tuple(doc["appointment_providers"]),
        sets={k: tuple(v) for k, v in (doc.get("sets") or {}).items()},
    )


def _settings(doc: LineDict, errors: list[PolicyError]) -> Settings | None:
    file = "data/settings.yaml"
    shipping = doc["shipping"]
    before = len(errors)
    try:
        zone = ZoneInfo(shipping["time_zone"])
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
        errors.append(
            ValidationError(
                f"unknown time zone `{shipping['time_zone']}`",
                code="validation_unknown_time_zone",
                location=Location(file, line_of(shipping, "time_zone")),
            )
        )
    calendars = doc["calendars"]
    name = shipping["calendar"]
    holidays: set[dt.date] = set()
    business: set[int] = set()
    if name not in calendars:
        errors.append(
            ValidationError(
                f"unknown calendar `{name}`",
                code="validation_unknown_name",
                location=Location(file, line_of(shipping, "calendar")),
                hint=did_you_mean(name, calendars),
            )
        )
    else:
        cal = calendars[name]
        business = {WEEKDAYS.index(d) for d in cal["business_days"]}
        for i, h in enumerate(cal["holidays"]):
            try:
                holidays.add(dt.date.fromisoformat(h["date"]))
            except ValueError:
                errors.append(
                    ValidationError(
                        f"invalid date `{h['date']}`",
                        code="validation_schema_error",
                        location=Location(file, line_of(cal["holidays"], i)),
                    )
                )
    params: dict[str, Any] = {}
    for key, value in (doc.get("params") or {}).items():
        if isinstance(value, str) and _DURATION.match(value):
            params[key] = parse_duration(value)
        else:
            params[key] = value
    hh, mm = (int(x) for x in shipping["cutoff"].split(":"))
    if len(errors) > before:
        return None
    return Settings(
        time_zone=zone,
        cutoff=dt.time(hh, mm),
        business_days=frozenset(business),
        holidays=frozenset(holidays),
        params=params,
        calendar=name,
    )


def _entries(doc: LineDict, key: str) -> dict[str, Entry]:
    section = doc[key]
    return {
        code: Entry(
            code=code,
            message=" ".join(str(v["message"]).split()),
            http_method=v.get("http_method", ""),
            path=v.get("path", ""),
            location=Location("data/catalogue.yaml", line_of(section, code)),
        )
        for code, v in section.items()
    }


def _policies(docs: list[tuple[str, Any]], errors: list[PolicyError]) -> dict[str, Policy]:
    out: dict[str, Policy] = {}
    for rel, doc in docs:
        if doc is None:
            continue
        action = doc["action"]
        if action in out:
            errors.append(
                ValidationError(
                    f"a second policy for action `{action}` (first in `{out[action].location.file}`)",
                    code="validation_duplicate_policy",
                    location=Location(rel, line_of(doc, "action")),
                )
            )
            continue
        rules = []
        for i, raw in enumerate(doc["rules"]):
            error = raw.get("error") or {}
            rules.append(
                Rule(
                    id=raw["id"],
                    effect=raw["effect"],
                    when=raw["when"],
                    on=raw.get("on", "any"),
                    description=raw.get("description", ""),
                    reasons=tuple(raw.get("reasons") or ()),
                    follow_ups=tuple(raw.get("follow_ups") or ()),
                    error_field=error.get("field", ""),
                    error_message=error.get("message", ""),
                    location=Location(rel, line_of(doc["rules"], i)),
                    raw=raw,
                )
            )
        out[action] = Policy(
            action=action,
            combining=doc["combining"],
            default_reason=doc["default"]["reason"],
            rules=tuple(rules),
            location=Location(rel, line_of(doc)),
        )
    return out
