"""Secure aggregation (Flower SecAgg+) inside a real simulation: the same model as plain
aggregation up to quantisation, every stage reply signed and verified, one dropped institution
survived, and a protocol failure (which the workflow itself only logs) failing the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jointcredit.data.catalog import resolve
from jointcredit.federation.settings import RunSettings
from jointcredit.models.artifact import load_artifact
from jointcredit.server.errors import FederationError
from jointcredit.simulations.simulate import simulate
from jointcredit.trust.store import load_store

BASE: dict[str, Any] = {
    "dataset": "synthetic",
    "institutions": 4,
    "synthetic-rows": 600,
    "rounds": 2,
    "checkpoints": False,
    "finetune-epochs": 0,
}

pytestmark = pytest.mark.integration


def _run(out: Path, **extra: Any) -> dict[str, Any]:
    settings = RunSettings.model_validate({**BASE, **extra, "out-dir": str(out)})
    return simulate(settings, with_baselines=False, with_audit=False).as_json()


def test_secagg_equals_plain_aggregation(tmp_path: Path) -> None:
    plain = _run(tmp_path / "plain")
    masked = _run(tmp_path / "secagg", privacy="secagg")
    a = np.load(tmp_path / "plain" / "model" / "weights.npz")
    b = np.load(tmp_path / "secagg" / "model" / "weights.npz")
    assert set(a.files) == set(b.files)
    for name in a.files:
        # Quantisation: 2^22 levels over [-8, 8] per round, weights scaled by rows / max rows.
        np.testing.assert_allclose(a[name], b[name], atol=1e-4)
    assert not all(np.array_equal(a[n], b[n]) for n in a.files)  # really a different path
    record = masked["privacy"]["secagg"]
    assert masked["privacy"]["setting"] == "secagg"
    assert record["institutions_aggregated"] == {"1": 4, "2": 4}
    # query + 4 SecAgg+ stages x 2 rounds + final evaluation + the fairness groups query and
    # its counts' SecAgg+ sum (4 stages) + the reference's SecAgg+ sum (4 stages), 4
    # institutions, all verified.
    assert masked["security"]["verified_replies"] == 4 * (1 + 4 * 2 + 1 + 1 + 4 + 4)
    # The reference counts, summed masked, are the plain run's (the features' exactly; the
    # scores come from weights equal to 1e-4).
    trust = load_store(tmp_path / "secagg" / "trust.json")
    secure = load_artifact(tmp_path / "secagg" / "model", trust).reference
    trust = load_store(tmp_path / "plain" / "trust.json")
    summed = load_artifact(tmp_path / "plain" / "model", trust).reference
    assert secure is not None and summed is not None
    assert secure.feature_counts == summed.feature_counts and secure.rows == summed.rows
    assert np.abs(np.subtract(secure.score_counts, summed.score_counts)).sum() <= 4
    assert masked["security"]["rejected_replies"] == 0
    assert abs(masked["federated"]["auc"] - plain["federated"]["auc"]) < 1e-3


def test_secagg_survives_a_dropped_institution(tmp_path: Path) -> None:
    settings = RunSettings.model_validate(BASE)
    dropped = resolve(settings.data).ids[1]
    metrics = _run(tmp_path, privacy="secagg", adversary=f"{dropped}:secagg-dropout")
    assert metrics["privacy"]["secagg"]["institutions_aggregated"] == {"1": 3, "2": 3}
    for rnd in metrics["rounds"]:
        assert rnd["errors"] == {f"train:{dropped}": f"{dropped} dropped out (simulated)"}
        assert dropped not in rnd["train_institutions"]
    assert metrics["federated"]["auc"] > 0.6


def test_unrecoverable_round_fails_the_run(tmp_path: Path) -> None:
    settings = RunSettings.model_validate(BASE)
    ids = resolve(settings.data).ids
    spec = ",".join(f"{i}:secagg-dropout" for i in ids[:3])  # 1 of 4 left: cannot unmask
    with pytest.raises(FederationError, match="SecAgg\\+ produced no aggregate"):
        _run(tmp_path, privacy="secagg", adversary=spec, **{"min-valid-fraction": 0.2})
