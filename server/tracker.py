"""What the coordinator keeps while the training rounds run: the latest global model, central
evaluation and a signed checkpoint per round, round times, institution-level DP's epsilon.

Flower's strategies call `evaluate_fn` once after every round (round 0: the initial model),
which makes it the coordinator's per-round hook.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from logging import WARNING
from typing import Any

import numpy as np
import pandas as pd
from flwr.app import ArrayRecord, MetricRecord, MetricRecordValues
from flwr.common.logger import log

from jointcredit.data.catalog import load_institution
from jointcredit.data.frames import Split
from jointcredit.federation.settings import RunSettings
from jointcredit.models.learners import Architecture, build_model
from jointcredit.models.metrics import risk_metrics
from jointcredit.models.preprocessing import PreprocessingSpec
from jointcredit.models.training import predict_pd
from jointcredit.server import events

Checkpoint = Callable[[ArrayRecord, int, dict[str, Any]], None]


def central_evaluator(
    settings: RunSettings, institutions: list[str], spec: PreprocessingSpec
) -> tuple[Split, np.ndarray] | None:
    """Simulation only: the union of the participating institutions' test splits.

    A real coordinator holds no rows; this exists because a simulation holds all of them and
    researchers want the pooled view. Off with `central-eval=false` (deployment).
    """
    if not settings.central_eval:
        return None
    try:
        parts = [load_institution(settings.data, inst).test for inst in institutions]
    except Exception as exc:  # no data on this machine: say so and go on without it
        log(WARNING, "Central evaluation disabled: %s", exc)
        return None
    pooled = Split(
        x=pd.concat([p.x for p in parts], ignore_index=True), y=np.concatenate([p.y for p in parts])
    )
    return pooled, spec.transform(pooled.x)


@dataclass
class RoundTracker:
    settings: RunSettings
    architecture: Architecture
    central: tuple[Split, np.ndarray] | None
    checkpoint: Checkpoint
    # The strategy, once built: under institution-level DP its accountant says what was spent.
    strategy: object = None
    latest: dict[int, ArrayRecord] = field(default_factory=dict)  # the last global model
    central_by_round: dict[int, dict[str, Any]] = field(default_factory=dict)
    central_epsilon: dict[int, float] = field(default_factory=dict)
    round_seconds: list[float] = field(default_factory=list)
    _round_started: float = field(default_factory=time.monotonic)

    def evaluate_fn(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        values: dict[str, Any] = {}
        self.latest.clear()
        self.latest[server_round] = arrays
        spent = getattr(self.strategy, "privacy_spent", lambda: None)()
        if spent is not None and server_round > 0:
            self.central_epsilon[server_round] = float(spent.epsilon)
        if self.central is not None:
            model = build_model(self.architecture)
            model.load_state_dict(arrays.to_torch_state_dict(), strict=True)
            pooled, x = self.central
            values = risk_metrics(pooled.y, predict_pd(model, x)).model_dump()
            self.central_by_round[server_round] = values
        if server_round > 0:
            seconds = time.monotonic() - self._round_started
            self.round_seconds.append(seconds)
            if self.settings.checkpoints:
                self.checkpoint(arrays, server_round, values)
            events.emit(
                events.ServerEvent(
                    "round", server_round, self.settings.rounds, {**values, "seconds": seconds}
                )
            )
            self._round_started = time.monotonic()
        defined: dict[str, MetricRecordValues] = {
            k: float(v) for k, v in values.items() if v is not None
        }
        return MetricRecord(defined) if defined else None

    def last(self) -> tuple[int, ArrayRecord]:
        """The last round that produced a global model, and that model."""
        ((server_round, arrays),) = self.latest.items()
        return server_round, arrays
