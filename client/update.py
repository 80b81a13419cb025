"""What one round of local training reports (shared by the plain and SecAgg+ paths)."""

from __future__ import annotations

from dataclasses import dataclass

from flwr.app import MetricRecordValues


@dataclass(frozen=True)
class LocalUpdate:
    """The metrics to report; `withheld`: no update to send (privacy budget spent)."""

    metrics: dict[str, MetricRecordValues]
    withheld: bool
