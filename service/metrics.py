"""The service's Prometheus metrics (`GET /metrics`), one registry per app."""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

OUTCOMES = ("approve", "decline", "refer")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        decisions = Counter(
            "jointcredit_decisions", "Decisions made", ["decision"], registry=self.registry
        )
        self._decisions = {o: decisions.labels(o) for o in OUTCOMES}
        latency = Histogram(
            "jointcredit_request_seconds", "Request latency", ["endpoint"],
            registry=self.registry,
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5),
        )  # fmt: skip
        self.latency_one, self.latency_batch = latency.labels("decision"), latency.labels("batch")
        self._errors = Counter(
            "jointcredit_errors", "Error responses", ["status"], registry=self.registry
        )
        self._commits = Gauge(
            "jointcredit_audit_commits", "Audit transactions committed (group commit)",
            registry=self.registry,
        )  # fmt: skip

    def decided(self, outcomes: Sequence[str]) -> None:
        if len(outcomes) == 1:  # a single decision: no counting structure to build
            self._decisions[outcomes[0]].inc()
            return
        for outcome, n in collections.Counter(outcomes).items():
            self._decisions[outcome].inc(n)

    def error(self, status: int) -> None:
        self._errors.labels(str(status)).inc()

    def count_commits(self, groups: Callable[[], float]) -> None:
        self._commits.set_function(groups)

    def text(self) -> bytes:
        return generate_latest(self.registry)
