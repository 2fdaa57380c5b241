"""The load test's CI mode as a pytest test (marker ``load``: ``pytest -m load tests/load``).

CI runs the same thing as ``python -m tests.load --ci`` (``make loadtest-ci``); this test
is for running it from pytest. It fails on any error, wrong decision, count mismatch or
memory growth, never on speed; the figures are printed.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from tests.load import check, harness
from tests.load.corpus import BUNDLE, build_corpus, write_bodies


@pytest.mark.load
@pytest.mark.timeout(240)
def test_ci_load_run_has_no_error_wrong_decision_count_mismatch_or_memory_growth(tmp_path: Path) -> None:
    """The short load run against the real server and the echo passes every check."""
    report = harness.run(harness.CI, work=tmp_path)
    print(harness.table(report))
    (tmp_path / "loadtest-results.json").write_text(harness.to_json(report))
    assert report.failures == []
    assert {(r.server, r.rpc, r.workers) for r in report.rows if r.load == "max"} == {
        (s, rpc, w) for s in ("echo", "service") for rpc in harness.RPCS for w in (1, 2)
    }
    assert report.checks["decisions checked under load"] > 0


@pytest.mark.load
def test_corpus_covers_both_inputs_actions_appointments_and_invalid_snapshots() -> None:
    """Every kind of request the issue asks for is in the corpus, and the files hold 100 each."""
    corpus = build_corpus(BUNDLE)
    kinds = collections.Counter((e.kind, e.action, e.has_appointment, e.expect.invalid) for e in corpus.entries)
    for kind in ("json", "typed"):
        for action in ("cancel_order", "cancel_appointment"):
            for appointment in (True, False):
                assert kinds[(kind, action, appointment, False)] > 0, (kind, action, appointment)
    assert sum(e.expect.invalid for e in corpus.entries) >= 50
    outcomes = {(e.action, e.expect.decision.outcome) for e in corpus.entries if not e.expect.invalid}
    assert outcomes == {(a, o) for a in ("cancel_order", "cancel_appointment") for o in ("ALLOW", "DENY")}


@pytest.mark.load
def test_data_files_are_length_prefixed_requests(tmp_path: Path) -> None:
    """Every h2load data file is the corpus requests, 5-byte prefixed, 100 per batch/stream call."""
    bodies = write_bodies(build_corpus(BUNDLE), tmp_path)
    for body in bodies["DecideStream"]:
        messages = list(check._unframe(body.path.read_bytes()))
        assert len(messages) == len(body.entries) == 100
    for body in bodies["DecideBatch"]:
        (payload,) = check._unframe(body.path.read_bytes())
        assert len(check.pb.DecideBatchRequest.FromString(payload).requests) == 100
