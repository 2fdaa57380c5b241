"""Every case of the bundle, through each call of the client, against the real server."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from cases_support import case_request, differences

from order_policy_client import Client, OrderPolicyError


def test_every_case_through_decide(client: Client, cases: list[dict[str, Any]]) -> None:
    """decide() returns each case's expected outcome, reasons and follow-ups, or raises
    InvalidArgument naming its field."""
    wrong: list[str] = []
    for case in cases:
        request = case_request(case)
        try:
            got = client.decide(request.order, request.appointment, request.action, request.now)
        except OrderPolicyError as exc:
            got = exc
        wrong += differences(case, got)
    assert wrong == []


def test_every_case_through_decide_batch(client: Client, cases: list[dict[str, Any]]) -> None:
    """decide_batch() answers every case in order, an invalid one with its error in its place."""
    wrong: list[str] = []
    for start in range(0, len(cases), 100):
        chunk = cases[start : start + 100]
        results = client.decide_batch([case_request(c, f"r{start + i}") for i, c in enumerate(chunk)])
        assert len(results) == len(chunk)
        for case, got in zip(chunk, results, strict=True):
            wrong += differences(case, got)
    assert wrong == []


def test_every_case_through_decide_stream(client: Client, cases: list[dict[str, Any]]) -> None:
    """decide_stream() answers every case in order over one stream, with each request's id."""
    requests = [case_request(c, f"s{i}") for i, c in enumerate(cases)]
    results = list(client.decide_stream(iter(requests)))
    assert len(results) == len(cases)
    wrong: list[str] = []
    for i, (case, got) in enumerate(zip(cases, results, strict=True)):
        wrong += differences(case, got)
        if not isinstance(got, OrderPolicyError):
            assert got.request_id == f"s{i}"
    assert wrong == []


def test_requests_as_mappings_and_dicts_give_the_same_decision(client: Client, cases: list[dict[str, Any]]) -> None:
    """A request given as a mapping of fields decides like the Request, JSON text like a dict."""
    case = next(c for c in cases if "error" not in c["expect"] and c["order"] is not None and c["order_json"] is None)
    request = case_request(case)

    as_text = dataclasses.replace(request, order=json.dumps(case["order"]))
    results = client.decide_batch([request, dataclasses.asdict(request), as_text])
    outcomes = {(r.outcome, tuple(x.code for x in r.reasons)) for r in results}  # type: ignore[union-attr]
    assert len(outcomes) == 1
