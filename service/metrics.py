"""The service's Prometheus metrics (`GET /metrics`), one registry per app.

Under `serve --workers N` every worker is its own process: `serve` points
`PROMETHEUS_MULTIPROC_DIR` at a fresh directory before the workers start, prometheus_client
then keeps every value in a file there, and `/metrics` (whichever worker answers) adds up the
files of all workers (`MultiProcessCollector`): counters and histograms sum, the audit commits
sum over live workers, the stability gauges (computed from the window all workers share) are
the most recently set value."""

from __future__ import annotations

import collections
import math
import os
from collections.abc import Callable, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

OUTCOMES = ("approve", "decline", "refer")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess() -> bool:
    """Whether this process keeps its values in the shared directory (`serve --workers`)."""
    return MULTIPROC_ENV in os.environ


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.shared = multiprocess()
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
            registry=self.registry, multiprocess_mode="livesum",
        )  # fmt: skip
        self._groups: Callable[[], float] | None = None
        self._window = Gauge(
            "jointcredit_monitoring_window", "Applicants in the stability monitoring window",
            registry=self.registry, multiprocess_mode="mostrecent",
        )  # fmt: skip
        self._psi = Gauge(
            "jointcredit_score_psi", "Population stability index of the score (window)",
            registry=self.registry, multiprocess_mode="mostrecent",
        )  # fmt: skip
        self._csi = Gauge(
            "jointcredit_feature_csi", "Characteristic stability index of a feature (window)",
            ["feature"], registry=self.registry, multiprocess_mode="mostrecent",
        )  # fmt: skip

    def decided(self, outcomes: Sequence[str]) -> None:
        if len(outcomes) == 1:  # a single decision: no counting structure to build
            self._decisions[outcomes[0]].inc()
        else:
            for outcome, n in collections.Counter(outcomes).items():
                self._decisions[outcome].inc(n)
        if self.shared and self._groups is not None:
            # A callback gauge is this process's only: the shared file gets the value, kept
            # current after every audited decision (its commit has just happened).
            self._commits.set(self._groups())

    def error(self, status: int) -> None:
        self._errors.labels(str(status)).inc()

    def count_commits(self, groups: Callable[[], float]) -> None:
        self._groups = groups
        if not self.shared:
            self._commits.set_function(groups)

    def stability(
        self, applicants: int, psi: float | None, csi: Mapping[str, float | None]
    ) -> None:
        self._window.set(applicants)
        self._psi.set(math.nan if psi is None else psi)
        for feature, value in csi.items():
            self._csi.labels(feature).set(math.nan if value is None else value)

    def text(self) -> bytes:
        if not self.shared:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
