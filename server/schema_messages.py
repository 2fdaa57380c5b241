"""Schema errors a policy owner can act on.

jsonschema says ``rules/4/when/reasons: [...] is not valid under any of the given
schemas``; this module says which rule (by its id) or case (by its name), points at the
line of the offending key or list item, says what is allowed there and suggests the
closest allowed name for a misspelling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jsonschema

from server.bundle.yamlio import line_of
from server.errors import Location, PolicyError, ValidationError, did_you_mean

__all__ = ["schema_error"]

_TYPES = {
    "array": "a list (`[a, b]` or `- item` lines)",
    "object": "a mapping (`key: value` lines)",
    "string": "text",
    "integer": "a whole number",
    "boolean": "`true` or `false`",
    "number": "a number",
}
# Keys of a rule: one of them inside `when` was most likely indented one level too deep.
_RULE_KEYS = ("id", "description", "effect", "on", "reasons", "follow_ups", "error")


def schema_error(err: jsonschema.ValidationError, data: Any, file: str) -> PolicyError:
    """One schema violation as an error naming the rule or case, the exact line and what is allowed."""
    err = _most_specific(err)
    path = list(err.absolute_path)
    subject, rest = _subject(data, path)
    node, parent, last = _nodes(data, path)
    line = line_of(parent, last) if last is not None else line_of(data)
    field = ".".join(str(p) for p in rest)
    # "rule `x`: `when.status`", "rule `x`" (the rule itself), "`shipping.cutoff`", "the document"
    where = f"{subject}: " if subject and field else ""
    at = f"`{field}`" if field else (subject or "the document")
    v, instance = err.validator, err.instance
    schema: dict[str, Any] = dict(err.schema) if isinstance(err.schema, dict) else {}

    if v == "additionalProperties" and isinstance(instance, dict):
        allowed = list((schema.get("properties") or {}).keys())
        extra = [k for k in instance if k not in allowed]
        key = extra[0] if extra else "?"
        return ValidationError(
            f"{where}unknown field `{key}` in {at}; allowed: {_names(allowed)}"
            if field or not subject
            else f"{subject}: unknown field `{key}`; allowed: {_names(allowed)}",
            code="validation_unknown_field",
            location=Location(file, line_of(node, key)),
            hint=did_you_mean(key, allowed),
        )
    if v == "enum":
        allowed = [str(a) for a in schema.get("enum", [])]
        return ValidationError(
            f"{where}{at} is `{_plain(instance)}`, which is not allowed here; allowed: {_names(allowed)}",
            code="validation_schema_error",
            location=Location(file, line),
            hint=did_you_mean(str(instance), allowed),
        )
    if v == "required":
        missing = next(
            (str(r) for r in schema.get("required", []) if not isinstance(instance, dict) or r not in instance), "?"
        )
        enum = ((schema.get("properties") or {}).get(missing) or {}).get("enum")
        needed = f" (one of {_names([str(a) for a in enum])})" if enum else ""
        return ValidationError(
            f"{where}{at} needs `{missing}`{needed}",
            code="validation_schema_error",
            location=Location(file, line_of(node) if node is not None else line),
        )
    if v == "type":
        wanted = schema.get("type")
        kinds = wanted if isinstance(wanted, list) else [wanted]
        return ValidationError(
            f"{where}{at} must be {' or '.join(_TYPES.get(str(k), str(k)) for k in kinds)}, not `{_plain(instance)}`",
            code="validation_schema_error",
            location=Location(file, line),
        )
    if v in ("oneOf", "anyOf") and len(rest) >= 2 and "when" in [str(p) for p in rest[:-1]]:
        return _condition_error(where, rest, instance, err, Location(file, line), node, file)
    if v == "pattern":
        return ValidationError(
            f"{where}{at} is `{_plain(instance)}`, which is not a valid name here (pattern `{schema.get('pattern')}`)",
            code="validation_schema_error",
            location=Location(file, line),
            hint="codes are UPPER_SNAKE_CASE; ids, facts and names lower_snake_case",
        )
    message = err.message.replace("\n", " ")
    if len(message) > 160:
        message = message[:157] + "..."
    return ValidationError(f"{where}{at}: {message}", code="validation_schema_error", location=Location(file, line))


def _condition_error(
    where: str,
    rest: Sequence[Any],
    instance: Any,
    err: jsonschema.ValidationError,
    location: Location,
    node: Any,
    file: str,
) -> PolicyError:
    """A fact's condition under `when` that matches none of the condition forms."""
    fact = str(rest[-1])
    if fact in _RULE_KEYS:
        return ValidationError(
            f"{where}`{fact}` is inside `when`, where only conditions go (`fact: value`)",
            code="validation_schema_error",
            location=location,
            hint=f"`{fact}` belongs to the rule: indent it like `when`, not under it",
        )
    schema = err.schema if isinstance(err.schema, dict) else {}
    operators = sorted({k for sub in (schema.get("oneOf") or []) for k in (sub.get("properties") or {})})
    if isinstance(instance, dict):
        unknown = [k for k in instance if k not in operators]
        if unknown:
            return ValidationError(
                f"{where}unknown operator `{unknown[0]}` in the condition on `{fact}`; allowed: {_names(operators)}",
                code="validation_schema_error",
                location=Location(file, line_of(node, unknown[0])),
                hint=did_you_mean(unknown[0], operators),
            )
        return ValidationError(
            f"{where}the condition on `{fact}` combines or misuses operators: one of {_names(operators)}, "
            "with a list for `in`/`not_in`, a set name for `in_set`/`not_in_set`, a number or "
            "`{param: NAME}` for `gt`/`gte`/`lt`/`lte`",
            code="validation_schema_error",
            location=location,
        )
    return ValidationError(
        f"{where}the condition on `{fact}` is `{_plain(instance)}`: write a value (`{fact}: x`) or one of "
        f"{_names(operators)} (`{fact}: {{in: [x, y]}}`)",
        code="validation_schema_error",
        location=location,
    )


def _most_specific(err: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """For oneOf/anyOf, the failure of the branch that got furthest into the document
    (an enum of `outcome` rather than "unknown field `outcome`" of another branch);
    the whole error when no branch stands out (a condition matching no form)."""
    if not err.context:
        return err
    deepest = max(len(e.absolute_path) for e in err.context)
    if deepest <= len(err.absolute_path):
        return err
    candidates = [e for e in err.context if len(e.absolute_path) == deepest]
    return _most_specific(min(candidates, key=lambda e: e.validator == "additionalProperties"))


def _subject(data: Any, path: Sequence[Any]) -> tuple[str, list[Any]]:
    """ "rule `id`" / "case `name`" for paths into `rules`/`cases`, and the rest of the path."""
    if len(path) >= 2 and path[0] in ("rules", "cases") and isinstance(path[1], int):
        try:
            item = data[path[0]][path[1]]
        except (KeyError, IndexError, TypeError):
            item = None
        key = "id" if path[0] == "rules" else "name"
        if isinstance(item, dict) and isinstance(item.get(key), str):
            return f"{path[0][:-1]} `{item[key]}`", list(path[2:])
        return f"{path[0][:-1]} {path[1] + 1}", list(path[2:])
    return "", list(path)


def _nodes(data: Any, path: Sequence[Any]) -> tuple[Any, Any, Any]:
    """The node at ``path``, its parent and its key in the parent (for line numbers)."""
    node, parent, last = data, data, None
    for part in path:
        parent, last = node, part
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
            break
    return node, parent, last


def _plain(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _names(names: Sequence[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)
