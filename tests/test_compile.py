"""Compilation: deterministic durable_rules rulesets, checked against reviewed golden files."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from server.bundle import load_bundle
from server.compile import compile_bundle, compile_policy
from tests.support.bundles import GOLDENS


@pytest.mark.parametrize("action", ["cancel_order", "cancel_appointment"])
def test_compiled_ruleset_matches_the_golden_file(fixture_bundle, update_goldens, action):
    """The fixture bundle compiles to exactly the reviewed ruleset (`make goldens` rewrites it)."""
    compiled = compile_bundle(load_bundle(fixture_bundle))[action].to_json()
    golden = GOLDENS / f"{fixture_bundle.name}.{action}.json"
    if update_goldens:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(compiled)
    assert golden.read_text() == compiled


def test_compilation_is_deterministic_and_independent_of_condition_key_order(fixture_bundle):
    """Shuffling the keys of every `when` changes nothing in the output."""
    bundle = load_bundle(fixture_bundle)
    policy = bundle.policies["cancel_order"]
    expected = compile_policy(policy, bundle).to_json()
    rng = random.Random(7)
    for _ in range(5):
        rules = []
        for r in policy.rules:
            keys = list(r.when)
            rng.shuffle(keys)
            rules.append(replace(r, when={k: r.when[k] for k in keys}))
        assert compile_policy(replace(policy, rules=tuple(rules)), bundle).to_json() == expected


def test_sets_and_params_are_resolved_to_constants(fixture_bundle):
    """The engine sees values only: named sets become equality lists and params numbers."""
    text = compile_bundle(load_bundle(fixture_bundle))["cancel_order"].to_json()
    assert "in_set" not in text
    assert "param" not in text
    assert '"$gt": {\n' in text
    assert "86400" in text


def test_only_equality_and_comparison_operators_are_emitted(fixture_bundle):
    """Pitfall 15 (docs/engine.md): no regex operator ($mt/$imt) is ever emitted: they fail silently in the engine."""
    for policy in compile_bundle(load_bundle(fixture_bundle)).values():
        text = policy.to_json()
        assert "$mt" not in text
        assert "$imt" not in text
        assert "$nex" not in text
