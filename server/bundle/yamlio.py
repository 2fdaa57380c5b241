"""YAML reading that remembers line numbers, so every error can say where it is."""

from __future__ import annotations

import re
from typing import Any

import yaml

from server.bundle.reader import DEFAULT_LIMITS
from server.errors import BundleError, Location


class LineDict(dict):  # type: ignore[type-arg]
    """A mapping from YAML that knows its own line and the line of each key."""

    line: int = 0
    key_lines: dict[Any, int]


class LineList(list):  # type: ignore[type-arg]
    """A sequence from YAML that knows its own line and the line of each item."""

    line: int = 0
    item_lines: list[int]


try:  # libyaml's parser when present; the composer is always Python so it can count and refuse
    from yaml._yaml import CParser as _CParser
except ImportError:  # pragma: no cover - pure-Python PyYAML
    _CParser = None  # type: ignore[assignment,misc]  # the C parser's name, absent without libyaml


class _Refused(Exception):
    def __init__(self, message: str, code: str, line: int) -> None:
        super().__init__(message)
        self.message, self.code, self.line = message, code, line


class _Loader(
    yaml.composer.Composer,
    _CParser or yaml.parser.Parser,  # type: ignore[misc]
    yaml.constructor.SafeConstructor,
    yaml.resolver.Resolver,
):
    """A safe loader that records lines, refuses duplicate and non-text keys, anchors and
    aliases (an alias bomb is refused before it expands) and more than ``max_nodes`` nodes."""

    def __init__(self, text: str, max_nodes: int) -> None:
        if _CParser is not None:
            _CParser.__init__(self, text)
        else:  # pragma: no cover
            yaml.reader.Reader.__init__(self, text)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self.max_nodes = max_nodes
        self.nodes = 0
        self.duplicates: list[tuple[Any, int]] = []
        self.bad_keys: list[tuple[Any, int]] = []

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.events.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused(
                "anchors and aliases (`&`, `*`, `<<`) are not allowed in bundle files",
                "bundle_parse_error",
                event.start_mark.line + 1,
            )
        self.nodes += 1
        if self.nodes > self.max_nodes:
            raise _Refused(
                f"more than {self.max_nodes} YAML nodes in one file", "bundle_too_large", event.start_mark.line + 1
            )
        return super().compose_node(parent, index)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    out = LineDict()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            loader.bad_keys.append((key, key_node.start_mark.line + 1))
            continue
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
    (
        "mapping values are not allowed",
        'a `:` inside a value or a key indented too deep: quote the value (`message: "a: b"`) or fix the indentation',
    ),
    ("could not find expected ':'", "a key without its `:`, or a quote that is not closed"),
    (
        "cannot start any token",
        "a character that cannot start a value here: a tab (indent with spaces only), "
        "or a value starting with `@` or a backtick (quote it)",
    ),
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


def load_yaml(text: str, file: str, max_nodes: int = DEFAULT_LIMITS.max_yaml_nodes) -> tuple[Any, list[BundleError]]:
    """Parse one YAML document; returns (data, errors). Every error names its line.

    Anchors and aliases, keys that are not text and more than ``max_nodes``
    nodes are refused before anything is built from them.
    """
    loader = _Loader(text, max_nodes)
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
    except _Refused as exc:
        return None, [BundleError(exc.message, code=exc.code, location=Location(file, exc.line))]
    except RecursionError:
        return None, [
            BundleError("the document is nested too deeply", code="bundle_parse_error", location=Location(file))
        ]
    finally:
        loader.dispose()
    errors = [
        BundleError(f"duplicate key `{key}`", code="bundle_duplicate_key", location=Location(file, line))
        for key, line in loader.duplicates
    ] + [
        BundleError(f"key `{key}` is not text: quote it", code="bundle_parse_error", location=Location(file, line))
        for key, line in loader.bad_keys
    ]
    return data, errors


def decode_text(content: bytes, file: str) -> tuple[str | None, list[BundleError]]:
    """UTF-8 text of a bundle file, or a located error."""
    try:
        return content.decode("utf-8"), []
    except UnicodeDecodeError as exc:
        return None, [
            BundleError(f"not UTF-8 text (byte {exc.start})", code="bundle_parse_error", location=Location(file))
        ]


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
