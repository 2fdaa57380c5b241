"""Prometheus metrics of the service (prometheus-client; multiprocess-safe).

Multiprocess mode is chosen by ``prometheus_client`` when it is first imported, from
``PROMETHEUS_MULTIPROC_DIR``: the ``serve`` command sets that variable before importing
this module, so every forked worker writes its own files and the metrics endpoint sums
them. Label children are cached because ``.labels()`` costs more than the increment.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)

__all__ = ["METRICS", "Metrics", "serve_metrics"]

_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


class Metrics:
    """The service's counters, histograms and gauges, with cached label children."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        kw: dict[str, Any] = {} if registry is None else {"registry": registry}
        self.decisions = Counter(
            "order_policy_decisions",
            "Decisions made, by action and outcome",
            ["action", "outcome"],
            **kw,
        )
        self.reasons = Counter(
            "order_policy_decision_reasons",
            "Reasons given in decisions, by action, outcome and reason code",
            ["action", "outcome", "reason"],
            **kw,
        )
        self.errors = Counter(
            "order_policy_errors",
            "Requests (or batch/stream items) answered with an error, by error code",
            ["code"],
            **kw,
        )
        self.latency = Histogram(
            "order_policy_rpc_duration_seconds",
            "Server time per RPC (per message for DecideStream), by method",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            **kw,
        )
        self.batch_size = Histogram(
            "order_policy_batch_size",
            "Items per DecideBatch call",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
            **kw,
        )
        self.bundle = Gauge(
            "order_policy_bundle_info",
            "The loaded bundle (1 for the active name/revision/digest)",
            ["name", "revision", "digest"],
            multiprocess_mode="livemax",
            **kw,
        )
        self.bundle_loads = Counter(
            "order_policy_bundle_loads",
            "Bundle activations and refusals, by result",
            ["result"],
            **kw,
        )
        self.shadow_decisions = Counter(
            "order_policy_shadow_decisions",
            "Requests also decided by the shadow candidate, by whether the answers differ",
            ["differs"],
            **kw,
        )
        self.decision_log_waits = Counter(
            "order_policy_decision_log_waits",
            "Decisions that waited because the decision log writer was behind",
            **kw,
        )
        self.decision_log_dropped = Counter(
            "order_policy_decision_log_dropped",
            "Decisions the decision log could not write after waiting",
            **kw,
        )
        self._decision_children: dict[tuple[str, str], object] = {}
        self._reason_children: dict[tuple[str, str, str], object] = {}
        self._latency_children: dict[str, object] = {}
        self._error_children: dict[str, object] = {}
        self._bundle_labels: tuple[str, str, str] | None = None

    def decision(self, action: str, outcome: str, reason_codes: Iterable[str]) -> None:
        """Count one decision and each of its reason codes."""
        self.count_decisions({(action, outcome, tuple(reason_codes)): 1})

    def count_decisions(self, tally: Mapping[tuple[str, str, tuple[str, ...]], int]) -> None:
        """Count many decisions at once: ``{(action, outcome, reason codes): count}``."""
        for (action, outcome, codes), n in tally.items():
            key = (action, outcome)
            child = self._decision_children.get(key)
            if child is None:
                child = self._decision_children[key] = self.decisions.labels(*key)
            child.inc(n)  # type: ignore[attr-defined]
            for code in codes:
                rkey = (action, outcome, code)
                rchild = self._reason_children.get(rkey)
                if rchild is None:
                    rchild = self._reason_children[rkey] = self.reasons.labels(*rkey)
                rchild.inc(n)  # type: ignore[attr-defined]

    def error(self, code: str) -> None:
        """Count one error by its stable code."""
        child = self._error_children.get(code)
        if child is None:
            child = self._error_children[code] = self.errors.labels(code)
        child.inc()  # type: ignore[attr-defined]

    def observe(self, method: str, seconds: float) -> None:
        """Record the server time of one RPC (or stream message)."""
        child = self._latency_children.get(method)
        if child is None:
            child = self._latency_children[method] = self.latency.labels(method)
        child.observe(seconds)  # type: ignore[attr-defined]

    def bundle_loaded(self, name: str, revision: str, digest: str) -> None:
        """Mark the active bundle (and only it) in ``order_policy_bundle_info``."""
        labels = (name, revision, digest)
        if self._bundle_labels is not None and self._bundle_labels != labels:
            # Multiprocess files keep old series: zero the old revision, not remove it.
            self.bundle.labels(*self._bundle_labels).set(0)
        self.bundle.labels(*labels).set(1)
        self._bundle_labels = labels


METRICS = Metrics()


def serve_metrics(port: int, host: str = "") -> object:
    """Serve ``/metrics`` on ``port``, summing every process when in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY as registry
    server, _thread = start_http_server(port, addr=host or "0.0.0.0", registry=registry)
    return server
