"""The native duplicate-key scan (``server/_jsonkeys.c``) against the exact answer of the standard decoder.

``scan`` answers True (no object holds a key twice), False (one does) or None (unsure). The
contract the fast path of ``server.facts`` relies on: never True when a duplicate exists, never
False when none does; None for anything it cannot tell, text that is not JSON included, without
crashing or reading past the end. The portable variants (no SSE2; no little-endian tricks, as on
a big-endian machine) are compiled here too and held to the same contract.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sysconfig
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server import facts
from server.errors import SnapshotError
from server.facts import ORDER_READS, parse_json_object
from tests.support.bundles import ROOT
from tests.support.fuzz import examples

Scan = Callable[[str | bytes], bool | None]


def test_the_native_module_is_built_and_used():
    """The build compiles server/_jsonkeys.c (a missing compiler must not pass unnoticed here) and facts uses it."""
    from server import _jsonkeys

    assert facts._scan_keys is _jsonkeys.scan
    assert _jsonkeys.scan('{"a": 1, "b": 2}') is True


def _build_hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_order_policy_hatch_build", ROOT / "hatch_build.py")
    assert spec is not None
    assert spec.loader is not None
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    return hook


def _load_variant(directory: Path, *flags: str) -> ModuleType:
    directory.mkdir()
    built = _build_hook().build_native(ROOT, directory, flags)
    assert built is not None, f"server/_jsonkeys.c does not compile with {flags}"
    spec = importlib.util.spec_from_file_location("_jsonkeys", built)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module", params=["native", "no-sse2", "portable"])
def scan(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Scan:
    """The scan as built, and compiled without SSE2, and without SSE2 or little-endian word tricks."""
    if request.param == "native":
        from server._jsonkeys import scan

        return scan
    flags = {"no-sse2": ("-DJSONKEYS_NO_SSE2",), "portable": ("-DJSONKEYS_NO_SSE2", "-DJSONKEYS_NO_LITTLE_ENDIAN")}
    return _load_variant(tmp_path_factory.mktemp("jsonkeys") / request.param, *flags[request.param]).scan  # type: ignore[no-any-return]


# -- the exact answer -----------------------------------------------------------------------


class _Duplicate(Exception):
    pass


def _refuse(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({key for key, _ in pairs}) != len(pairs):
        raise _Duplicate
    return dict(pairs)


def has_duplicate(text: str | bytes) -> bool:
    """The exact answer: the standard decoder, told to report any object that holds a key twice."""
    try:
        json.loads(text, object_pairs_hook=_refuse)
    except _Duplicate:
        return True
    return False


def assert_agrees(scan: Scan, text: str, exact: bool) -> None:
    """The scan's answer is allowed by the exact one (and is the exact one when ``exact``), for
    the text as str and as bytes alike."""
    duplicate = has_duplicate(text)
    for data in (text, text.encode()):
        answer = scan(data)
        if duplicate:
            assert answer is not True, text
        else:
            assert answer is not False, text
        if exact:
            assert answer is (not duplicate), text


# -- generated documents ---------------------------------------------------------------------

# A small alphabet, so duplicates are frequent: keys as in orders, of each length class of the
# hash (under 8 bytes, 8-15, 16 and more); a non-ASCII key and its decomposed spelling
# (different keys to JSON); the empty key.
KEYS = ["a", "b", "id", "status", "type", "order_id", "created_at", "a_much_longer_key_over_16_bytes"]
KEYS += ["a_much_longer_key", "é", "e\u0301", ""]
BLANKS = st.sampled_from(["", " ", "  ", "\n", "\t", "\r\n  "])


def _escape_all(text: str) -> str:
    return "".join(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else c for c in text)


@st.composite
def key_spellings(draw: st.DrawFn, escapes: bool) -> str:
    """A key of KEYS as JSON: plain, or with ``escapes`` sometimes with a letter or all of it as
    escapes, or with `\\/`."""
    key = draw(st.sampled_from(KEYS))
    how = draw(st.sampled_from(["plain"] * 6 + ["ascii", "one", "all", "slash"])) if escapes else "plain"
    if how == "ascii" or not key:
        return json.dumps(key, ensure_ascii=True)
    if how == "one":
        i = draw(st.integers(0, len(key) - 1))
        return '"' + key[:i] + _escape_all(key[i]) + key[i + 1 :] + '"'
    if how == "all":
        return '"' + _escape_all(key) + '"'
    if how == "slash":
        return json.dumps(key + "/", ensure_ascii=False).replace("/", "\\/")
    return json.dumps(key, ensure_ascii=False)


# Strings with quotes, backslashes, control characters, non-ASCII and astral characters,
# long enough to cross the 8- and 16-byte blocks of the string skipping.
value_strings = st.text(
    alphabet=st.sampled_from(['"', "\\", "/", "\n", "\x00", "\x1f", "a", "z", " ", "é", "€", "𝄞", "\u2028"])
    | st.characters(codec="utf-8"),
    max_size=40,
).flatmap(lambda s: st.sampled_from([json.dumps(s), json.dumps(s, ensure_ascii=False)]))
scalars = (
    value_strings
    | st.sampled_from(["true", "false", "null", "0", "-0", "1.5", "-12e3", "1E+2", "0.25e-7", "123456789012345678901"])
    | st.integers().map(str)
)


_NUMBER = re.compile(r"-?([0-9]+)(?:\.([0-9]+))?(?:[eE][+-]?([0-9]+))?")


def long_number(text: str) -> bool:
    """A number the scan leaves to the decoders (unsure): more than 18 digits before the
    exponent or more than 2 exponent digits, where decoders may read it differently."""
    match = _NUMBER.fullmatch(text)
    if match is None:
        return False
    mantissa, fraction, exponent = match.groups()
    return len(mantissa) + len(fraction or "") > 18 or len(exponent or "") > 2


@st.composite
def documents(draw: st.DrawFn, depth: int = 0, escapes: bool | None = None) -> tuple[str, bool]:
    """A JSON text (nested objects and arrays, keys from KEYS, often twice, varied blanks), and
    whether the scan may be unsure of it: some key in it is spelled with an escape (a quarter of
    the documents may have some), or a number in it is longer than the scan trusts."""
    if escapes is None:
        escapes = draw(st.integers(0, 3)) == 0
    kind = draw(st.sampled_from(["object", "object", "array", "scalar"] if depth < 4 else ["scalar"]))
    b = [draw(BLANKS) for _ in range(4)]
    if kind == "scalar":
        scalar = draw(scalars)
        return scalar, long_number(scalar)
    items = [draw(documents(depth + 1, escapes)) for _ in range(draw(st.integers(0, 4)))]
    escaped = any(e for _, e in items)
    if kind == "array":
        return "[" + b[0] + f"{b[1]},{b[2]}".join(t for t, _ in items) + b[3] + "]", escaped
    keys = [draw(key_spellings(escapes)) for _ in items]
    members = [key + b[1] + ":" + b[2] + text for key, (text, _) in zip(keys, items, strict=True)]
    return "{" + b[0] + f"{b[3]},{b[0]}".join(members) + b[3] + "}", escaped or any("\\" in k for k in keys)


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=documents(), outer=BLANKS)
@pytest.mark.fuzz
def test_the_scan_agrees_with_the_exact_answer(scan, doc, outer):
    """Never "unique" when a key appears twice in one object, never "duplicate" when none does,
    and exact when no key is spelled with an escape and no number is longer than it trusts."""
    text, may_be_unsure = doc
    assert_agrees(scan, outer + text + outer, exact=not may_be_unsure)


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=documents(), cut=st.integers(0, 10_000), byte=st.integers(0, 255), how=st.sampled_from(["cut", "set"]))
@pytest.mark.fuzz
def test_damaged_text_answers_unsure_or_what_the_decoder_says(scan, doc, cut, byte, how):
    """A cut or altered text never crashes the scan; any answer but None is for text the decoder accepts."""
    data = doc[0].encode()
    cut %= len(data) + 1
    damaged = data[:cut] if how == "cut" else data[:cut] + bytes([byte]) + data[cut + 1 :]
    answer = scan(damaged)
    if answer is None:
        return
    orjson.loads(damaged)  # raises when the scan said anything for text that is not JSON
    assert answer is (not has_duplicate(damaged))


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
@pytest.mark.fuzz
def test_arbitrary_bytes_answer_unsure_or_what_the_decoder_says(scan, data):
    """Random bytes: the scan answers only for JSON, and then rightly."""
    answer = scan(data)
    if answer is not None:
        orjson.loads(data)
        assert answer is (not has_duplicate(data))


# -- chosen cases -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ('{"a": 1, "b": 2}', True),
        ('{"a": 1, "a": 2}', False),
        ('{"a": {"a": 1}, "b": [{"a": 1}, {"a": 2}]}', True),  # equal keys in different objects
        ('[{"a": 1}, {"b": 2, "b": 3}]', False),
        ('{"x": {"a": 1}, "a": 2}', True),  # a nested object's keys are dropped when it closes
        ('{"é": 1, "e\u0301": 2}', True),  # precomposed and decomposed: different keys
        ('{"€": 1, "€": 2}', False),
        ('{"a\\"b": 1}', None),  # an escaped key: unsure
        ('{"a": 123456789012345678, "b": -1.5e-07, "c": 1E+99}', True),  # numbers every decoder reads alike
        ('{"a": 1234567890123456789}', None),  # 19 digits: a float to some decoders, an integer to others
        ('{"a": 0.1234567890123456789}', None),  # as many digits after the point
        ('{"a": 1e400}', None),  # beyond a double: refused by some decoders, skipped by others
        ('{"a": [1, 2, 1E-308, 1e309]}', None),
        ('{"st\\u0061tus": 1, "status": 2}', None),
        ('{"v": "\\"", "v2": "\\\\", "v3": "x\\\\\\"y"}', True),  # escaped quotes and backslashes in values
        ('{"a": "}", "b": "{\\"a\\": 1, \\"a\\": 2}"}', True),  # JSON inside a string is a string
        ('{"a_much_longer_key_over_16_bytes": 1, "a_much_longer_key_over_16_bytez": 2}', True),
        ('{"a_much_longer_key_over_16_bytes": 1, "a_much_longer_key_over_16_bytes": 2}', False),
        ('{"abcdefgh-1-ijklmnop": 1, "abcdefgh-2-ijklmnop": 2}', True),  # equal first and last 8 bytes
        ('{"": 1, "": 2}', False),
        ("{}", True),
        ("[]", True),
        ("0", True),
        (' \t\r\n{ "a" : [ 1 , 2 ] } \n', True),
        ("", None),
        ("   ", None),
        ("{} {}", None),
        ('{"a": 1,}', None),
        ("[1,]", None),
        ('{"a" 1}', None),
        ('{"a": 01}', None),
        ('{"a": 1.}', None),
        ('{"a": tru}', None),
        ('{"a": NaN}', None),
        ('{"a": "\x01"}', None),
        ('{"a": "\\x"}', None),
        ('{"a": "\\u12G4"}', None),
        ('{"a": "\\ud834\\udd1e"}', True),  # a surrogate pair
        ('{"a": "\\ud834"}', None),  # a high surrogate alone, as orjson refuses it
        ('{"a": "\\ud834\\u0041"}', None),
        ('{"a": "\\udd1e"}', None),  # a low surrogate alone
        ('{"a": "\\ud834\\', None),
        ("[1}", None),
        ('{"a": 1]', None),
        ('{"a": "b"', None),
        ('{"a', None),
    ],
)
def test_chosen_texts(scan, text, want):
    """What each answer means, on texts written out: str and bytes alike."""
    assert scan(text) is want
    assert scan(text.encode()) is want


@pytest.mark.parametrize(
    "data",
    [
        b'{"a": "\xff"}',  # not UTF-8
        b'{"a": "\xc3"}',  # a sequence cut by the quote
        b'{"a": "\xc0\xaf"}',  # overlong
        b'{"a": "\xed\xa0\x80"}',  # a surrogate
        b'{"a": "\xf4\x90\x80\x80"}',  # above U+10FFFF
        b'{"\xe9": 1}',  # Latin-1, not UTF-8
        b'{"a": 1}\xc3',
        b'{"a": "\xe2\x82',
    ],
)
def test_bytes_that_are_not_utf8_answer_unsure(scan, data):
    """orjson refuses them, and so does the scan: never a verdict on text that is not JSON."""
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(data)
    assert scan(data) is None


def test_a_str_that_cannot_be_utf8_answers_unsure(scan):
    """A lone surrogate has no UTF-8 form: unsure, and no exception left set."""
    assert scan('{"a": "\ud800"}') is None
    assert scan('{"a": 1}') is True


def test_other_types_are_refused(scan):
    with pytest.raises(TypeError, match="str or bytes"):
        scan(bytearray(b"{}"))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        scan(None)  # type: ignore[arg-type]


def _nested(depth: int, inner: str) -> str:
    return '{"a": ' * depth + inner + "}" * depth


def test_nesting_up_to_the_bound_is_scanned_and_deeper_is_unsure(scan):
    """256 open containers are scanned exactly; one more is unsure (and so is orjson's own limit)."""
    assert scan(_nested(255, '{"b": 1, "b": 2}')) is False
    assert scan(_nested(255, '{"b": 1, "c": 2}')) is True
    assert scan(_nested(256, '{"b": 1}')) is None
    assert scan("[" * 100_000) is None
    assert scan("[" * 100_000 + "]" * 100_000) is None


def test_objects_with_many_keys(scan):
    """Up to 256 keys per object are compared; more is unsure; the key array grows past its inline part."""
    keys = [f"key{i}" for i in range(256)]
    assert scan(json.dumps(dict.fromkeys(keys, 1))) is True
    assert scan(json.dumps(dict.fromkeys(keys[:255], 1))[:-1] + ', "key7": 2}') is False
    assert scan(json.dumps(dict.fromkeys([*keys, "one more"], 1))) is None
    assert scan(json.dumps({f"k{i}": 1 for i in range(5000)})) is None
    # 20 open objects of 250 keys each: more than 4,096 keys open at once is unsure
    wide = {f"k{i}": i for i in range(249)}
    doc: dict[str, Any] = dict(wide)
    for _ in range(19):
        doc = {**wide, "z": doc}
    assert scan(json.dumps(doc)) is None
    # the same keys in objects that close one after the other never pile up
    assert scan(json.dumps([wide] * 100)) is True


def test_a_one_mib_string_and_long_keys(scan):
    big = "x" * (1 << 20)
    assert scan(json.dumps({"a": big, "b": big})) is True
    assert scan(json.dumps({"a": big + '"\\', "b": 1}, ensure_ascii=False)) is True
    assert scan('{"' + big + '": 1, "' + big + '": 2}') is False
    assert scan('{"' + big + '": 1, "' + big[:-1] + 'y": 2}') is True
    assert scan(json.dumps({"a": "é" * (1 << 19)}, ensure_ascii=False).encode()) is True
    assert scan('{"a": "' + big) is None  # cut inside the string


def test_no_memory_is_kept_on_any_path(scan):
    """Every return, early ones included, frees the grown key array (tracemalloc sees PyMem blocks)."""
    wide = {f"k{i}": i for i in range(200)}  # past the inline keys: the array is on the heap
    texts = [
        json.dumps(wide),  # unique
        json.dumps(wide)[:-1] + ', "k0": 1}',  # a duplicate
        json.dumps(wide)[:-1] + ', "k\\u0030": 1}',  # an escaped key: early return
        json.dumps(wide)[:-1] + ', "x": "',  # cut short: early return
        _nested(20, json.dumps(wide)[:-1] + ', "z": ' + _nested(300, "1") + "}"),  # too deep: early return
    ]
    for text in texts:
        scan(text)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(300):
            for text in texts:
                scan(text)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 10_000


# -- through parse_json_object: the same answers as the pure-Python fallback ------------------------


@st.composite
def orders(draw: st.DrawFn) -> str:
    """Order-shaped JSON where keys the policy reads, and keys it does not, sometimes appear twice."""
    names = ["id", "status", "created_at", "type", "method", "x"]
    event = st.lists(st.tuples(st.sampled_from(names), st.sampled_from(['"a.b.c"', "1", '"2026-03-09T10:00:00Z"'])))

    def obj(pairs: list[tuple[str, str]]) -> str:
        return "{" + ", ".join(f'"{k}": {v}' for k, v in pairs) + "}"

    events = "[" + ", ".join(obj(e) for e in draw(st.lists(event, max_size=3))) + "]"
    top = [("id", '"o"'), ("events", events), ("details", obj(draw(event))), ("lab_test", obj(draw(event)))]
    top += draw(st.lists(st.tuples(st.sampled_from(names + ["events"]), st.just('"v"')), max_size=2))
    return obj(draw(st.permutations(top)))


def _outcome(text: str | bytes) -> str:
    try:
        return f"ok {sorted(parse_json_object(text, 'order_json', ORDER_READS))}"
    except SnapshotError as exc:
        return f"{exc.field}: {exc.message}"


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=orders())
@pytest.mark.fuzz
def test_parse_json_object_decides_as_with_the_fallback(monkeypatch, text):
    """The same order accepted, or refused naming the same field, with the native scan and without it."""
    with_native = _outcome(text), _outcome(text.encode())
    with monkeypatch.context() as m:
        m.setattr(facts, "_scan_keys", None)
        without = _outcome(text), _outcome(text.encode())
    assert with_native == without
    if not has_duplicate(text):
        assert with_native[0].startswith("ok"), with_native


def test_an_unsure_scan_still_takes_the_quote_count(monkeypatch):
    """When the native scan is unsure (an escaped key), the quote count decides before the slow path."""
    slow: list[str] = []
    monkeypatch.setattr(facts, "_refuse_duplicates", lambda text, field, reads: slow.append(field))
    parse_json_object('{"id": "o", "st\\u0061tus": "a"}', "order_json", ORDER_READS)
    assert slow == []  # escaped key, no duplicate: the quote count said unique
    parse_json_object('{"id": "o", "x": 1, "x": 2}', "order_json", ORDER_READS)
    assert slow == ["order_json"]  # a duplicate: the exact path looks (and lets an unread key pass)


def test_a_build_without_a_working_compiler_warns_and_goes_on(tmp_path, monkeypatch, capsys):
    """No module (an older one is removed) and a warning naming the fallback, never a failed build."""
    stale = tmp_path / f"_jsonkeys{sysconfig.get_config_var('EXT_SUFFIX')}"
    stale.write_bytes(b"an older build")
    monkeypatch.setenv("CC", "false")
    assert _build_hook().build_native(ROOT, tmp_path) is None
    assert list(tmp_path.iterdir()) == []  # nothing half-written, and no older build left in use
    err = capsys.readouterr().err
    assert "WARNING: `false -O2" in err
    assert "pure-Python fallback" in err
