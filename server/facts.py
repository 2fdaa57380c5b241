"""Facts from a snapshot: Junction's order JSON (+ appointment, action, now) -> flat facts.

Code computes generic facts; the bundle decides. Which statuses exist, their
aliases, the appointment vocabulary, the shipping time zone, cut-off and
calendar all come from the bundle (``Vocabulary`` and ``Settings``).

An invalid snapshot raises :class:`SnapshotError` naming the field; it is
never a decision. Unknown fields of the order are ignored.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeGuard

import msgspec
import orjson

from server.bundle import Settings, Vocabulary
from server.errors import EvalError, SnapshotError
from server.model import ACTIONS, Snapshot

_scan_keys: Callable[[str | bytes], bool | None] | None
try:  # compiled by the build (hatch_build.py); without a C compiler the quote count decides alone
    from server._jsonkeys import scan as _scan_keys
except ImportError:  # tests/test_jsonkeys.py fails when the test environment lacks it
    _scan_keys = None

__all__ = [
    "APPOINTMENT_READS",
    "FACTS",
    "ORDER_READS",
    "READ_FIELDS",
    "TEMPLATE_EXTRAS",
    "FactSpec",
    "Facts",
    "derive",
    "parse_json_object",
    "parse_timestamp",
]

_STATUS3 = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$").match
_WORD = re.compile(r"^[a-z][a-z0-9_]*$")
_MAX_EVENTS = 10_000
_fromisoformat = dt.datetime.fromisoformat

# Spellings already found valid (detailed statuses, methods, top statuses): a dict lookup
# instead of a regular expression per value on the hot path. Bounded: past the limit new
# spellings are checked each time, as before, and not remembered.
_KNOWN_LIMIT = 4096
_GOOD_STATUSES: dict[str, None] = {}
_GOOD_WORDS: dict[str, None] = {}


def _remember(known: dict[str, None], value: str) -> None:
    if len(known) < _KNOWN_LIMIT:
        known[value] = None


@dataclass(frozen=True)
class FactSpec:
    """One fact rules may test: its type, the vocabulary its values come from, its guard.

    ``domain`` names a vocabulary (``method``, ``status``, ``high``, ``low``,
    ``appointment_status``, ``provider``) or, with ``values``, a fixed enum.
    ``guard`` is a boolean fact that must be true for the value to mean anything;
    the compiler adds it to every comparison.
    """

    type: str  # "string" | "bool" | "int"
    domain: str = ""
    values: tuple[str, ...] = ()
    guard: str = ""
    description: str = ""


FACTS: dict[str, FactSpec] = {
    "method": FactSpec("string", "method", description="collection method"),
    "method_known": FactSpec("bool", description="the method is in the vocabulary"),
    "status": FactSpec("string", "status", description="detailed status HIGH.METHOD.LOW, aliases resolved"),
    "status_received": FactSpec("string", "status", description="detailed status as received"),
    "status_high": FactSpec("string", "high", description="HIGH part of the detailed status (aliases resolved)"),
    "status_low": FactSpec("string", "low", description="LOW part of the detailed status (aliases resolved)"),
    "status_source": FactSpec("string", values=("events", "top"), description="where the status comes from"),
    "status_known": FactSpec("bool", description="the detailed status is in the vocabulary of its method"),
    "top_status": FactSpec("string", "high", description="the deprecated top-level status field"),
    "top_status_conflict": FactSpec("bool", description="top status and HIGH part as received disagree"),
    "appointment_present": FactSpec("bool", description="the request carries an appointment"),
    "appointment_status": FactSpec("string", "appointment_status"),
    "appointment_provider": FactSpec("string", "provider"),
    "appointment_has_start": FactSpec("bool", description="the appointment has a start_at"),
    "appointment_notice_seconds": FactSpec(
        "int", guard="appointment_has_start", description="start_at - now, in seconds (negative when past)"
    ),
    "ship_day": FactSpec(
        "string",
        values=("due", "later", "unknown"),
        description="estimated kit ship day (bundle calendar and cut-off) is today or earlier / later / unknown",
    ),
}

#: Template variables that are not facts.
TEMPLATE_EXTRAS = ("order_id", "current_status")

_EVENT_FIELDS = {"id": None, "created_at": None, "status": None}
#: INVARIANT: every field of the order and the appointment that :func:`derive` reads, and
#: only those (the replayable capture keeps exactly these; a test proves that deciding the
#: kept fields gives the decision of the whole snapshot). A name maps to ``None`` (the value
#: as it is), to the fields kept of an object, or to a one-item list: the fields kept of
#: each element of an array.
READ_FIELDS: dict[str, dict[str, Any]] = {
    "order": {
        "id": None,
        "status": None,
        "created_at": None,
        "details": {"type": None},
        "lab_test": {"method": None},
        "diagnostic_lab_test": {"method": None},
        "events": [_EVENT_FIELDS],
        "last_event": _EVENT_FIELDS,
    },
    "appointment": {"order_id": None, "status": None, "provider": None, "start_at": None},
}


class Facts(NamedTuple):
    """The derived facts of one snapshot, plus what messages need (a named tuple: built
    for every decision, at a fifth of a frozen dataclass's cost)."""

    values: dict[str, Any]
    order_id: str
    now: dt.datetime
    action: str


# The shapes the duplicate-key check follows: exactly what the policy reads.
ORDER_READS = READ_FIELDS["order"]
APPOINTMENT_READS = READ_FIELDS["appointment"]


def _reader(name: str, spec: dict[str, Any]) -> Any:
    """A msgspec Struct type holding the fields of ``spec`` (a :data:`READ_FIELDS` shape),
    each left UNSET when absent, so that converting it back gives exactly the fields that
    were there. A leaf takes any JSON value (the facts check it); an object or an array of
    objects must be one (or null): anything else is for the full reader to report."""
    fields: list[tuple[str, Any, Any]] = []
    for key, sub in spec.items():
        if sub is None:
            kind: Any = Any
        elif isinstance(sub, list):
            kind = list[_reader(f"{name}_{key}", sub[0])] | None | msgspec.UnsetType  # type: ignore[misc]
        else:
            kind = _reader(f"{name}_{key}", sub) | None | msgspec.UnsetType
        fields.append((key, kind, msgspec.UNSET))
    return msgspec.defstruct(name, fields)


# What the policy reads of an order and of an appointment, decoded without building the
# rest of the document (about a third of the cost of decoding it all, and far fewer objects).
_READERS: dict[int, msgspec.json.Decoder[Any]] = {
    id(ORDER_READS): msgspec.json.Decoder(_reader("OrderReads", ORDER_READS)),
    id(APPOINTMENT_READS): msgspec.json.Decoder(_reader("AppointmentReads", APPOINTMENT_READS)),
}
_to_builtins = msgspec.to_builtins
_READ_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)


def read_json_object(text: str | bytes, field: str, reads: dict[str, Any]) -> dict[str, Any]:
    """What the policy reads of a JSON object (``reads``: :data:`ORDER_READS` or
    :data:`APPOINTMENT_READS`): the same fields as :func:`parse_json_object` would give,
    and the same errors.

    The usual document is decoded into the read fields alone, trusted only when the native
    scan says that it is JSON, that no object holds a key twice and that every number in
    it reads alike in every decoder (a number in a field this decoder skips is not
    checked by it). Anything else (text that is not JSON, a shape the facts refuse,
    nesting deeper than this decoder follows, a duplicate key anywhere, a long number, no
    native scan) is left to :func:`parse_json_object`, which reports it exactly or returns
    the whole object (the facts read the same fields of it).
    """
    if _scan_keys is not None:
        try:
            value: dict[str, Any] = _to_builtins(_READERS[id(reads)].decode(text))
        except _READ_ERRORS:
            pass
        else:
            if _scan_keys(text) is True:
                return value
    return parse_json_object(text, field, reads)


def parse_json_object(text: str | bytes, field: str, reads: dict[str, Any] | None = None) -> dict[str, Any]:
    """Decode a JSON object; anything else is a :class:`SnapshotError` naming ``field``.

    With ``reads`` (:data:`ORDER_READS`, :data:`APPOINTMENT_READS`), a key the policy reads
    that appears twice in one object is refused too, naming it (``order_json.events[0].status``):
    parsers disagree on which of the two values counts, so the caller and the service could
    see different orders.
    """
    try:
        value = orjson.loads(text)
    except (orjson.JSONDecodeError, RecursionError) as exc:
        raise SnapshotError(field, f"not valid JSON: {str(exc).splitlines()[0][:120]}") from None
    if not isinstance(value, dict):
        raise SnapshotError(field, f"expected a JSON object, got {_kind(value)}")
    if reads is not None and not _surely_unique(text, value):
        _refuse_duplicates(text, field, reads)
    return value


def _surely_unique(text: str | bytes, value: dict[str, Any]) -> bool:
    """True when no object of the document holds a key twice (the fast path).

    The native scan (``server._jsonkeys``, one pass over the text, about 2 us on a 4 KB
    order) answers first; when it is unsure (a key spelled with an escape, very deep nesting,
    an object with hundreds of keys) or not built, the quote count decides.
    """
    if _scan_keys is not None:
        unique = _scan_keys(text)
        if unique is not None:
            return unique
    return _quote_counts_match(text, value)


def _quote_counts_match(text: str | bytes, value: dict[str, Any]) -> bool:
    """The pure-Python fast path (two C scans and a re-serialisation, about 7 us on a 4 KB order).

    Each key and each string of the text is one pair of unescaped quotes, and so it is in
    the document re-serialised; a duplicate's key (and its value) exist only in the text.
    So without a ``\\u0022`` escape (the one way to spell a quote differently) the quote
    counts are equal exactly when nothing was dropped.
    """
    try:
        again = orjson.dumps(value)
    except orjson.JSONEncodeError:  # nested deeper than orjson writes: take the slow path
        return False
    # A backslash is rare in order JSON and found at memchr speed: look for the escape only then.
    if isinstance(text, str):
        if "\\" in text and "\\u0022" in text:
            return False
        return text.count('"') == again.count(b'"')
    if b"\\" in text and b"\\u0022" in text:
        return False
    return text.count(b'"') == again.count(b'"')


class _Object(dict):  # type: ignore[type-arg]
    """A decoded JSON object that remembers which of its keys appeared more than once."""

    __slots__ = ("twice",)
    twice: set[str] | tuple[()]


def _pairs(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object(pairs)
    obj.twice = ()
    if len(obj) != len(pairs):
        seen: set[str] = set()
        twice = set()
        for key, _ in pairs:
            if key in seen:
                twice.add(key)
            seen.add(key)
        obj.twice = twice
    return obj


def _refuse_duplicates(text: str | bytes, field: str, reads: dict[str, Any]) -> None:
    """The slow path: decode again keeping every key, and refuse a read key that appears twice."""
    try:
        doc = json.loads(text, object_pairs_hook=_pairs)
    except RecursionError:
        raise SnapshotError(field, "nests arrays or objects too deeply to be checked for duplicate keys") from None
    except ValueError:
        return  # orjson took it, the standard decoder does not: nothing more to learn here
    found = _first_duplicate(doc, reads, field)
    if found is not None:
        raise SnapshotError(
            found, "appears twice in the same object: send each key once (JSON parsers disagree on which value counts)"
        )


def _first_duplicate(obj: Any, reads: dict[str, Any], path: str) -> str | None:
    if not isinstance(obj, _Object):
        return None
    for key in reads:
        if key in obj.twice:
            return f"{path}.{key}"
    for key, sub in reads.items():
        if sub is None or key not in obj:
            continue
        value = obj[key]
        if isinstance(sub, list):
            items = value if isinstance(value, list) else ()
            for i, item in enumerate(items):
                found = _first_duplicate(item, sub[0], f"{path}.{key}[{i}]")
                if found is not None:
                    return found
        else:
            found = _first_duplicate(value, sub, f"{path}.{key}")
            if found is not None:
                return found
    return None


def _is_mapping(value: Any) -> TypeGuard[Mapping[str, Any]]:
    # Decoded JSON is a dict: test that first (an ABC isinstance check is slower).
    return type(value) is dict or isinstance(value, Mapping)


def _kind(value: Any) -> str:
    """What a JSON value is, with the value itself when short, for "expected X, got Y" messages
    (never just "a string" when a string was expected: say which one, or that it was empty)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (int, float)):
        return f"the number `{str(value)[:32]}`"
    if isinstance(value, str):
        return f"the string `{value[:64]}`" if value else "an empty string"
    if isinstance(value, list):
        return f"an array of {len(value)} items" if value else "an empty array"
    return "an object"


def parse_timestamp(value: Any, field: str) -> dt.datetime:
    """An ISO 8601 timestamp with a time-zone offset; anything else names ``field``.

    An aware ``datetime`` (the typed gRPC input) is taken as it is.
    """
    if type(value) is dt.datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise SnapshotError(field, "has no time-zone offset")
        return value
    if not isinstance(value, str):
        raise SnapshotError(field, f"expected a timestamp string, got {_kind(value)}")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise SnapshotError(field, f"`{value[:64]}` is not an ISO 8601 timestamp") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise SnapshotError(field, f"`{value[:64]}` has no time-zone offset")
    return parsed


def _event(raw: Any, where: str) -> tuple[dt.datetime, int, str]:
    """(created_at, id, status) of one event; ``where`` names it only when it is invalid."""
    if type(raw) is not dict and not isinstance(raw, Mapping):
        raise SnapshotError(where, f"expected an object, got {_kind(raw)}")
    ev_id = raw.get("id")
    if type(ev_id) is not int:
        if ev_id is None:
            raise SnapshotError(f"{where}.id", "missing")
        if not isinstance(ev_id, int) or isinstance(ev_id, bool):
            raise SnapshotError(f"{where}.id", f"expected an integer, got {_kind(ev_id)}")
    created_raw = raw.get("created_at")
    if created_raw is None:
        raise SnapshotError(f"{where}.created_at", "missing")
    created = parse_timestamp(created_raw, f"{where}.created_at")
    status = raw.get("status")
    if type(status) is not str or not _STATUS3(status):
        if status is None:
            raise SnapshotError(f"{where}.status", "missing")
        if not isinstance(status, str):
            raise SnapshotError(f"{where}.status", f"expected a HIGH.METHOD.LOW string, got {_kind(status)}")
        raise SnapshotError(f"{where}.status", f"`{status[:80]}` is not HIGH.METHOD.LOW in lower_snake_case")
    _remember(_GOOD_STATUSES, status)
    return created, ev_id, status


def _event_fast(raw: Any) -> tuple[dt.datetime, int, str] | None:
    """:func:`_event` for the usual shape (an object with an integer id, an ISO 8601 text
    with an offset or an aware datetime, a status already seen valid); None for anything
    else, which :func:`_event` then checks (and names, when it is wrong)."""
    if type(raw) is not dict:
        return None
    ev_id = raw.get("id")
    created = raw.get("created_at")
    status = raw.get("status")
    if type(ev_id) is not int or type(status) is not str or status not in _GOOD_STATUSES:
        return None
    if type(created) is str:
        try:
            created = _fromisoformat(created)
        except ValueError:
            return None
    elif type(created) is not dt.datetime:
        return None
    # fromisoformat gives a fixed offset or none; a typed datetime may carry any tzinfo.
    if created.tzinfo is None or created.utcoffset() is None:
        return None
    return created, ev_id, status


def _latest_status(order: Mapping[str, Any]) -> tuple[str, str] | None:
    """The latest of ``events[]`` and ``last_event`` (by created_at, then id): (status, field).

    One pass; each event's field name is spelt out only for an error or the winner.
    """
    best: tuple[dt.datetime, int, str] | None = None
    best_at = -1
    events = order.get("events")
    if events is not None:
        if type(events) is not list:
            raise SnapshotError("order.events", f"expected an array, got {_kind(events)}")
        if len(events) > _MAX_EVENTS:
            raise SnapshotError("order.events", f"more than {_MAX_EVENTS} events")
        for i, raw in enumerate(events):
            ev = _event_fast(raw) or _event(raw, f"order.events[{i}]")
            if best is None or ev[:2] > best[:2]:
                best, best_at = ev, i
    last = order.get("last_event")
    if last is not None:
        ev = _event_fast(last) or _event(last, "order.last_event")
        if best is None or ev[:2] > best[:2]:
            return ev[2], "order.last_event.status"
    if best is None:
        return None
    return best[2], f"order.events[{best_at}].status"


_METHOD_FIELDS = (
    ("lab_test", "order.lab_test", "order.lab_test.method"),
    ("diagnostic_lab_test", "order.diagnostic_lab_test", "order.diagnostic_lab_test.method"),
)


def _method(order: Mapping[str, Any], detailed: tuple[str, str] | None) -> str:
    """The collection method: every source that names one must agree.

    The usual shape (``details.type`` already seen valid, the other sources absent or
    equal to it) is answered at once; anything else by :func:`_method_checked`.
    """
    details = order.get("details")
    if type(details) is dict:
        method = details.get("type")
        if type(method) is str and method in _GOOD_WORDS:
            lab = order.get("lab_test")
            diag = order.get("diagnostic_lab_test")
            if (
                (lab is None or (type(lab) is dict and lab.get("method") in (None, method)))
                and (diag is None or (type(diag) is dict and diag.get("method") in (None, method)))
                and (detailed is None or detailed[0].split(".", 2)[1] == method)
            ):
                return method
    return _method_checked(order, detailed)


def _method_checked(order: Mapping[str, Any], detailed: tuple[str, str] | None) -> str:
    sources: list[tuple[str, Any]] = []
    details = order.get("details")
    if _is_mapping(details):
        sources.append(("order.details.type", details.get("type")))
    elif details is not None:
        raise SnapshotError("order.details", f"expected an object, got {_kind(details)}")
    for key, where, field in _METHOD_FIELDS:
        sub = order.get(key)
        if _is_mapping(sub):
            sources.append((field, sub.get("method")))
        elif sub is not None:
            raise SnapshotError(where, f"expected an object, got {_kind(sub)}")
    if detailed is not None:
        sources.append((detailed[1], detailed[0].split(".", 2)[1]))
    method = ""
    first = ""
    for field, value in sources:
        if value is None:
            continue
        if not isinstance(value, str) or not _WORD.match(value):
            if not isinstance(value, str):
                raise SnapshotError(field, f"expected a lower_snake_case method, got {_kind(value)}")
            raise SnapshotError(field, f"`{value[:64]}` is not a lower_snake_case method")
        _remember(_GOOD_WORDS, value)
        if not method:
            method, first = value, field
        elif value != method:
            raise SnapshotError(field, f"method `{value}` disagrees with `{method}` from `{first}`")
    if not method:
        raise SnapshotError(
            "order.details.type",
            "no collection method: none of details.type, lab_test.method, "
            "diagnostic_lab_test.method or a detailed status is present",
        )
    return method


def calendar_end(settings: Settings) -> dt.date | None:
    """The last day the business-day calendar knows (see :attr:`Settings.calendar_end`)."""
    return settings.calendar_end


def _ship_day(order: Mapping[str, Any], now: dt.datetime, settings: Settings) -> str:
    created_raw = order.get("created_at")
    if created_raw is None:
        return "unknown"
    created = parse_timestamp(created_raw, "order.created_at").astimezone(settings.time_zone)
    day = created.date()
    if not _is_business_day(day, settings) or created.time() >= settings.cutoff:
        day = _next_business_day(day, settings)
    end = settings.calendar_end
    if end is not None and day > end:
        # Past the listed holidays the business days are unknown: an error, never a guess.
        setting = f"calendars.{settings.calendar}.holidays" if settings.calendar else "calendars"
        raise EvalError(
            f"the estimated ship day {day.isoformat()} is past the end of the business-day calendar "
            f"({end.isoformat()}): add the holidays of {day.year} to `{setting}` in data/settings.yaml",
            code="eval_calendar_ended",
        )
    today = now.astimezone(settings.time_zone).date()
    return "due" if day <= today else "later"


def _is_business_day(day: dt.date, settings: Settings) -> bool:
    return day.weekday() in settings.business_days and day not in settings.holidays


def _next_business_day(day: dt.date, settings: Settings) -> dt.date:
    for _ in range(366):
        day += dt.timedelta(days=1)
        if _is_business_day(day, settings):
            return day
    return day  # a calendar with no business day in a year: schema forbids an empty week


def derive(snapshot: Snapshot, vocab: Vocabulary, settings: Settings, clock_now: dt.datetime) -> Facts:
    """The facts of one snapshot; raises :class:`SnapshotError` naming the field when invalid."""
    if snapshot.action not in ACTIONS:
        raise SnapshotError(
            "action", f"unknown action `{str(snapshot.action)[:64]}`: expected one of {', '.join(ACTIONS)}"
        )
    now = snapshot.now if snapshot.now is not None else clock_now
    if now.tzinfo is None or now.utcoffset() is None:
        raise SnapshotError("now", "has no time-zone offset")
    order = snapshot.order
    if not _is_mapping(order):
        raise SnapshotError("order", f"expected an object, got {_kind(order)}")
    order_id = order.get("id")
    if not isinstance(order_id, str) or not order_id:
        raise SnapshotError(
            "order.id", "missing" if order_id is None else f"expected a non-empty string, got {_kind(order_id)}"
        )

    detailed = _latest_status(order)
    top = order.get("status")
    if top is not None and not isinstance(top, str):
        raise SnapshotError("order.status", f"expected a lower_snake_case top status, got {_kind(top)}")
    if top is not None and top not in _GOOD_WORDS:
        if not _WORD.match(top):
            raise SnapshotError("order.status", f"`{top[:64]}` is not a lower_snake_case top status")
        _remember(_GOOD_WORDS, top)
    if detailed is None and top is None:
        raise SnapshotError("order.events", "no status: no events, no last_event and no top status")
    method = _method(order, detailed)

    if detailed is not None:
        received = detailed[0]
        canonical = vocab.aliases.get(received, received)
        high, _, low = canonical.split(".", 2)
        known = canonical in vocab.methods.get(method, ())
        conflict = top is not None and top != received.split(".", 1)[0]
        source = "events"
    else:
        received = canonical = high = low = None  # type: ignore[assignment]
        known = conflict = False
        source = "top"
    present, appt_status, provider, has_start, notice = _appointment(snapshot.appointment, order_id, now, vocab)
    # One dict literal: this runs for every decision.
    values: dict[str, Any] = {
        "status": canonical,
        "status_received": received,
        "status_high": high,
        "status_low": low,
        "method": method,
        "method_known": method in vocab.methods,
        "top_status": top,
        "status_source": source,
        "status_known": known,
        "top_status_conflict": conflict,
        "appointment_present": present,
        "appointment_status": appt_status,
        "appointment_provider": provider,
        "appointment_has_start": has_start,
        "appointment_notice_seconds": notice,
        "ship_day": _ship_day(order, now, settings),
    }
    return Facts(values=values, order_id=order_id, now=now, action=snapshot.action)


_NO_APPOINTMENT = (False, None, None, False, 0)


def _appointment(
    appt: Any, order_id: str, now: dt.datetime, vocab: Vocabulary
) -> tuple[bool, str | None, str | None, bool, int]:
    """(present, status, provider, has_start, notice_seconds) of the appointment."""
    if appt is None:
        return _NO_APPOINTMENT
    if not _is_mapping(appt):
        raise SnapshotError("appointment", f"expected an object, got {_kind(appt)}")
    other = appt.get("order_id")
    if other is not None and other != order_id:
        shown = f"`{other[:64]}`" if isinstance(other, str) else _kind(other)
        raise SnapshotError("appointment.order_id", f"{shown} names another order than `{order_id}`")
    status = appt.get("status")
    if status not in vocab.appointment_statuses:
        known = ", ".join(vocab.appointment_statuses)
        if status is None:
            raise SnapshotError("appointment.status", f"missing: expected one of {known}")
        if not isinstance(status, str):
            raise SnapshotError("appointment.status", f"expected one of {known}, got {_kind(status)}")
        raise SnapshotError("appointment.status", f"`{status[:64]}` is not one of {known}")
    provider = appt.get("provider")
    if provider is not None and not isinstance(provider, str):
        raise SnapshotError("appointment.provider", f"expected a string, got {_kind(provider)}")
    start_raw = appt.get("start_at")
    notice = 0
    if start_raw is not None:
        start = parse_timestamp(start_raw, "appointment.start_at")
        # Rounded up: for a whole-second threshold T, notice > T exactly when
        # ceil(notice) > T, so "more than 24 h" stays exact at sub-second notice.
        notice = math.ceil((start - now).total_seconds())
    return True, status, provider or None, start_raw is not None, notice
