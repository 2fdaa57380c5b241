"""YAML reading that remembers line numbers, so every error can say where it is."""

from __future__ import annotations

import functools
import re
from typing import Any

import yaml

from server.errors import BundleError, Location


class LineDict(dict):  # type: ignore[type-arg]
    """A mapping from YAML that knows its own line and the line of each key."""

    line: int = 0
    key_lines: dict[Any, int]


class LineList(list):  # type: ignore[type-arg]
    """A sequence from YAML that knows its own line and the line of each item."""

    line: int = 0
    item_lines: list[int]


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """SafeLoader that records lines and refuses duplicate keys."""

    duplicates: list[tuple[Any, int]]


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    out = LineDict()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            loader.duplicates.append((key, key_node.start_mark.line + 1))
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = key_node.start_mark.line + 1
    return out


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    out = LineList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [child.start_mark.line + 1 for child in node.value]
    return out


def _construct_timestamp_as_text(loader: _Loader, node: yaml.ScalarNode) -> str:
    # Timestamps and dates stay strings: the facts layer parses and checks them.
    return str(loader.construct_scalar(node))


# YAML 1.1 reads `on`, `off`, `yes`, `no` as booleans (`on: allow` would become
# `True: allow`); only `true` and `false` are booleans here, as in YAML 1.2.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp_as_text)


# The parser's own words, and what they usually mean in a bundle file.
_EXPLAINED = (
    ("did not find expected '-' indicator", "a list item or key is indented differently from the lines above it"),
    ("did not find expected key", "a line is indented differently from the keys above it, or a quote is not closed"),
    ("mapping values are not allowed", "a `:` inside a value or a key indented too deep: quote the value "
                                       "(`message: \"a: b\"`) or fix the indentation"),
    ("could not find expected ':'", "a key without its `:`, or a quote that is not closed"),
    ("cannot start any token", "a character that cannot start a value here: a tab (indent with spaces only), "
                               "or a value starting with `@` or a backtick (quote it)"),
    ("found unexpected end of stream", "a quote or bracket is not closed before the end of the file"),
    ("did not find expected ',' or ']'", "a `[...]` list is not closed, or an item lacks its comma"),
    ("did not find expected ',' or '}'", "a `{...}` mapping is not closed, or an entry lacks its comma"),
    ("found unknown escape character", "a backslash inside double quotes: use single quotes or `\\\\`"),
    ("found undefined alias", "a `*name` with no `&name` before it: quote text that starts with `*`"),
    ("found another document", "a `---` separator: a bundle file holds one document"),
    ("found unexpected ':'", "a `:` where a value was expected: quote the value"),
)


def explain_yaml_problem(problem: str) -> str:
    """A plain explanation of a YAML parser message."""
    for said, meaning in _EXPLAINED:
        if said in problem:
            return meaning
    return "the file is not valid YAML here"


def load_yaml(text: str, file: str) -> tuple[Any, list[BundleError]]:
    """Parse one YAML document; returns (data, errors). Syntax errors name the line.

    INVARIANT: the returned document is shared (parses are cached by content, so
    verifying, loading and testing a bundle, and reloading unchanged files, parse
    each file once): callers never mutate it; :func:`plain` makes a private copy.
    """
    data, errors = _load_cached(text, file)
    return data, list(errors)


@functools.lru_cache(maxsize=64)
def _load_cached(text: str, file: str) -> tuple[Any, tuple[BundleError, ...]]:
    data, errors = _load(text, file)
    return data, tuple(errors)


def _load(text: str, file: str) -> tuple[Any, list[BundleError]]:
    loader = _Loader(text)
    loader.duplicates = []
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        lines = text.splitlines()
        shown = lines[line - 1].strip() if 0 < line <= len(lines) else ""
        return None, [
            BundleError(
                f"invalid YAML: {explain_yaml_problem(problem)} (the parser says: {problem})",
                code="bundle_parse_error",
                location=Location(file, line),
                hint=f"line {line}: `{shown}`" if shown else "",
            )
        ]
    finally:
        loader.dispose()
    errors = [
        BundleError(
            f"duplicate key `{key}`",
            code="bundle_duplicate_key",
            location=Location(file, line),
        )
        for key, line in loader.duplicates
    ]
    return data, errors


def line_of(node: Any, key: Any = None) -> int:
    """The line of ``node`` (or of ``node[key]``), 0 when unknown."""
    if key is not None:
        if isinstance(node, LineDict):
            return node.key_lines.get(key, node.line)
        if isinstance(node, LineList) and isinstance(key, int) and key < len(node.item_lines):
            return node.item_lines[key]
    return int(getattr(node, "line", 0))


def plain(node: Any) -> Any:
    """A deep copy with plain dicts and lists (for JSON and the engine)."""
    if isinstance(node, dict):
        return {k: plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    return node
