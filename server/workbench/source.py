"""Where a rule is written, and its YAML text, for people reading a matrix or a diff."""

from __future__ import annotations

import textwrap

import yaml

from server.bundle import Rule
from server.bundle.yamlio import load_yaml, plain
from server.decide import Decider

__all__ = ["find_rule", "rule_source"]


def find_rule(decider: Decider, rule_id: str, action: str | None = None) -> Rule:
    """The rule ``rule_id`` (of ``action`` when given); KeyError naming it when there is none."""
    for name, policy in decider.bundle.policies.items():
        if action is not None and name != action:
            continue
        for rule in policy.rules:
            if rule.id == rule_id:
                return rule
    raise KeyError(f"no rule `{rule_id}`" + (f" in the policy for `{action}`" if action else ""))


def rule_source(decider: Decider, rule_id: str, *, action: str | None = None) -> tuple[str, int, str]:
    """(file, line, YAML text) of a rule: the file relative to the bundle, its first line, its text.

    The text is the rule as written in the file (comments included) while the file
    still holds what was loaded; otherwise (an archive's unpacked files are gone, or
    the file changed since) the loaded rule written out as YAML.
    """
    rule = find_rule(decider, rule_id, action)
    file, line = rule.location.file, rule.location.line
    text = _written(decider, rule, file, line)
    if text is None:
        text = yaml.safe_dump([plain(rule.raw)], sort_keys=False, allow_unicode=True, width=100)
    return file, line, text


def _written(decider: Decider, rule: Rule, file: str, line: int) -> str | None:
    """The rule's lines in its file, if they still parse to the loaded rule."""
    policy = next((p for p in decider.bundle.policies.values() if rule in p.rules), None)
    if policy is None or not file or line < 1:
        return None
    try:
        lines = (decider.bundle.root / file).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    later = [r.location.line for r in policy.rules if r.location.file == file and r.location.line > line]
    chunk = lines[line - 1 : (min(later) - 1) if later else len(lines)]
    # Comments and blank lines after the rule introduce the next one.
    while chunk and (not chunk[-1].strip() or chunk[-1].lstrip().startswith("#")):
        chunk.pop()
    text = textwrap.dedent("\n".join(chunk)) + "\n"
    parsed, errors = load_yaml(text, file)
    if errors or plain(parsed) != [plain(rule.raw)]:
        return None
    return text
