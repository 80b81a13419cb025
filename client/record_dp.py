"""One institution's record-level DP round: plan, enforce the budget, train, account.

The plan (noise calibrated to this institution's own sampling rate) and the accountant's
history live in the node's `context.state`, so they persist across rounds for the whole run
(Flower keeps a node's Context per run, in simulation and in deployment alike); across a
crash and resume the institution's signed durable copy carries them (`client.durable`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from flwr.app import ConfigRecord, RecordDict

from jointcredit.federation.protocol import STATE_RECORD_DP, STATE_RECORD_DP_HISTORY
from jointcredit.federation.settings import RunSettings
from jointcredit.models.training import TrainConfig
from jointcredit.privacy.record_dp import DPSGDPlan, PrivacyLedger, plan, train_dp_sgd


@dataclass(frozen=True)
class RoundOutcome:
    steps: int  # DP-SGD steps taken this round (0: budget spent, no update sent)
    planned: int
    epsilon: float  # spent after this round
    loss: float
    plan: DPSGDPlan

    @property
    def exhausted(self) -> bool:
        return self.steps < self.planned

    def reported(self) -> dict[str, float]:
        """What the institution reports with its signed reply (`TrainMetrics` fields).
        Infinite epsilon (no noise) travels as -1: metric records carry finite numbers."""
        return {
            "dp_epsilon": self.epsilon if math.isfinite(self.epsilon) else -1.0,
            "dp_steps": float(self.steps),
            "dp_planned_steps": float(self.planned),
            "dp_noise_multiplier": self.plan.noise_multiplier,
            "dp_sample_rate": self.plan.sample_rate,
            "dp_exhausted": 1.0 if self.exhausted else 0.0,
        }


def _load(state: RecordDict, settings: RunSettings, n_rows: int) -> tuple[DPSGDPlan, PrivacyLedger]:
    record = state.config_records.get(STATE_RECORD_DP)
    if record is not None:
        saved = DPSGDPlan(**{k: record[k] for k in DPSGDPlan.__dataclass_fields__})  # type: ignore[arg-type]
        return saved, PrivacyLedger.from_json(str(record[STATE_RECORD_DP_HISTORY]))
    fresh = plan(
        epsilon=settings.epsilon,
        delta=settings.delta,
        max_grad_norm=settings.max_grad_norm,
        batch_size=settings.batch_size,
        n_rows=n_rows,
        steps_per_round=settings.steps_per_round(n_rows),
        rounds=settings.rounds,
        noise_multiplier=settings.noise_multiplier,
    )
    return fresh, PrivacyLedger()


def _save(state: RecordDict, dp: DPSGDPlan, ledger: PrivacyLedger) -> None:
    state[STATE_RECORD_DP] = ConfigRecord({**asdict(dp), STATE_RECORD_DP_HISTORY: ledger.to_json()})


def record_dp_round(
    model: torch.nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    cfg: TrainConfig,
    settings: RunSettings,
    state: RecordDict,
    *,
    global_params: list[torch.Tensor] | None = None,
    persist: Callable[[], None] | None = None,
) -> RoundOutcome:
    """Train `model` in place with DP-SGD for as many of this round's steps as the budget
    allows, recorded in the node's accountant before they are taken (and, with `persist`,
    written where a crash cannot lose them): a round that fails half-way counts in full."""
    dp, ledger = _load(state, settings, len(y))
    steps = ledger.steps_within(dp, settings.epsilon, settings.delta)
    loss = math.nan
    if steps > 0 or STATE_RECORD_DP not in state.config_records:
        ledger.record(dp, steps)
        _save(state, dp, ledger)
        if persist is not None:
            persist()
    if steps > 0:
        loss = train_dp_sgd(model, x, y, cfg, dp, steps, global_params=global_params)
    return RoundOutcome(
        steps=steps,
        planned=dp.steps_per_round,
        epsilon=ledger.epsilon(settings.delta),
        loss=loss,
        plan=dp,
    )
