"""Fuzzing the bundle loader: mutations of a fixture bundle's YAML always give a valid bundle or
located errors with stable codes, never an exception escaping the pipeline.

A short run is part of ``make test``; ``make fuzz`` runs these with many more examples.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.errors import ErrorList, PolicyError
from server.registry import build_decider
from tests.support.bundles import FIXTURE_BUNDLE
from tests.support.fuzz import examples

pytestmark = pytest.mark.fuzz

# Each example compiles a bundle (about a second): the long run takes a fifth of FUZZ_EXAMPLES.
FUZZ = settings(
    max_examples=max(30, examples(30) // 5),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
FILES = [
    "manifest.yaml",
    "data/vocabulary.yaml",
    "data/catalogue.yaml",
    "data/settings.yaml",
    "policies/cancel_order.yaml",
    "policies/cancel_appointment.yaml",
]
CODE = re.compile(r"^[a-z]+(_[a-z0-9]+)+$")
SNIPPETS = [
    "&a ",
    "*a",
    "<<: *a",
    ": ",
    "- ",
    "\t",
    "'",
    '"',
    "[",
    "]",
    "{",
    "}",
    "#",
    "1: x",
    "true",
    "null",
    "~",
    "---",
    "\xff",
    "\u202e",
    "2026-01-01",
    "0x1F",
    "1e400",
    "!!binary AAAA",
    "!!python/none",
    "? ",
    "|",
    ">",
    "%YAML 1.1",
    "\n  ",
    "\n- \n",
    "[" * 50,
]

mutation = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.sampled_from(SNIPPETS) | st.text(max_size=8)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 200)),
    st.tuples(st.just("duplicate_line"), st.integers(0, 10**6), st.just("")),
    st.tuples(st.just("replace_value"), st.integers(0, 10**6), st.sampled_from(SNIPPETS) | st.text(max_size=8)),
)


def mutate(text: str, op: str, at: int, arg: object) -> str:
    if not text:
        return str(arg)
    pos = at % len(text)
    if op == "insert":
        return text[:pos] + str(arg) + text[pos:]
    if op == "delete":
        return text[:pos] + text[pos + int(arg) :]  # type: ignore[call-overload]
    lines = text.splitlines(keepends=True)
    i = at % len(lines)
    if op == "duplicate_line":
        return "".join(lines[: i + 1] + lines[i:])
    head, sep, _ = lines[i].partition(": ")
    lines[i] = f"{head}{sep}{arg}\n" if sep else lines[i]
    return "".join(lines)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz") / "bundle"
    shutil.copytree(FIXTURE_BUNDLE, root)
    return root


@FUZZ
@given(file=st.sampled_from(FILES), ops=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_yaml_gives_a_bundle_or_located_errors(workdir: Path, file: str, ops) -> None:
    path = workdir / file
    original = (FIXTURE_BUNDLE / file).read_text(encoding="utf-8")
    text = original
    for op, at, arg in ops:
        text = mutate(text, op, at, arg)
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        decider = build_decider(workdir)
    except ErrorList as exc:
        assert exc.errors, "an ErrorList names at least one error"
        for error in exc.errors:
            assert isinstance(error, PolicyError), error
            assert CODE.match(error.code), error.code
            assert error.message, error
            assert "\n" not in error.message, error.message
        assert any(e.location.file for e in exc.errors), [str(e) for e in exc.errors]
    else:
        decider.close()
    finally:
        path.write_text(original, encoding="utf-8")
