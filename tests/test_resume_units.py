"""The coordinator state a resume restores: institution-level DP's accountant (the releases
already made), FedAvgM's momentum, SCAFFOLD's c, each through the checkpoint's files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

from jointcredit.federation.settings import RunSettings
from jointcredit.server.resume import (
    ResumePoint,
    ServerState,
    releases,
    restore_strategy,
    strategy_arrays,
)
from jointcredit.server.strategy import build_strategy

COMMON = {"fraction_train": 1.0, "min_train_nodes": 3, "min_available_nodes": 3}


def _through_checkpoint(state: ServerState) -> ServerState:
    return ServerState.from_files(*state.files().values())


def _point(state: ServerState, model: ArrayRecord) -> ResumePoint:
    return ResumePoint(Path("."), model, b"", [], _through_checkpoint(state))


def test_institution_dp_accountant_restored_from_its_releases() -> None:
    settings = RunSettings(privacy="dp-institution", epsilon=3.0, model="logreg", rounds=5)
    before = build_strategy(settings, 3, COMMON)
    event = GaussianPrivacyEvent(
        noise_multiplier=before.noise_multiplier, sample_size=3, population_size=3
    )
    before.accountant.compose(event, count=2)  # type: ignore[union-attr]
    state = ServerState(lineage="ab", round=2, releases=releases(before))
    after = build_strategy(settings, 3, COMMON)
    restore_strategy(after, _point(state, ArrayRecord()), ArrayRecord())
    spent, again = before.privacy_spent(), after.privacy_spent()
    assert spent is not None and again is not None
    assert again.num_releases == 2 and again.epsilon == spent.epsilon


def test_fedavgm_momentum_and_scaffold_control_come_back() -> None:
    model = ArrayRecord({"w": Array(np.ones(3, dtype=np.float32))})
    momentum = RunSettings(strategy="fedavgm", model="logreg")
    before = build_strategy(momentum, 3, COMMON)
    before.momentum_vector = [np.arange(3, dtype=np.float32)]  # type: ignore[union-attr]
    state = ServerState(lineage="ab", round=2, arrays=strategy_arrays(before))
    after = build_strategy(momentum, 3, COMMON)
    restore_strategy(after, _point(state, model), model)
    assert after.momentum_vector[0].tolist() == [0.0, 1.0, 2.0]  # type: ignore[union-attr]
    assert after.current_arrays is model  # type: ignore[union-attr]

    scaffold = RunSettings(strategy="scaffold", model="logreg")
    before = build_strategy(scaffold, 3, COMMON)
    before.control = ArrayRecord({"w": Array(np.full(3, 0.5, dtype=np.float32))})  # type: ignore[union-attr]
    state = ServerState(lineage="ab", round=2, arrays=strategy_arrays(before))
    after = build_strategy(scaffold, 3, COMMON)
    restore_strategy(after, _point(state, model), model)
    assert after.control["w"].numpy().tolist() == [0.5, 0.5, 0.5]  # type: ignore[union-attr]
