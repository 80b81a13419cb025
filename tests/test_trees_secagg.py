"""Gradient-boosted trees under `privacy = secagg` in a real Flower simulation: every tree
level's histograms summed through SecAgg+ (the coordinator sees masked vectors and their sum
only, every stage reply signed and verified) grow the trees of the plain run: the same
splits, leaf values within the fixed point's rounding."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jointcredit.federation import fixed_point
from jointcredit.federation.settings import RunSettings
from jointcredit.models.artifact import ScoringModel, load_artifact
from jointcredit.models.learners.gbdt import TreeModule
from jointcredit.models.trees import TreeEnsemble
from jointcredit.models.trees.bins import layout as bin_layout
from jointcredit.simulations.simulate import simulate
from jointcredit.trust.store import load_store

pytestmark = pytest.mark.integration

BASE: dict[str, Any] = {
    "model": "gbdt",
    "dataset": "synthetic",
    "institutions": 4,
    "synthetic-rows": 600,
    "trees": 3,
    "max-depth": 3,
    "max-bins": 16,
    "tree-learning-rate": 0.3,
    "personal-trees": 0,
    "checkpoints": False,
    "seed": 3,
}


def _run(out: Path, **extra: Any) -> tuple[dict[str, Any], ScoringModel, TreeEnsemble]:
    """The run's metrics, its model and that model's ensemble."""
    settings = RunSettings.model_validate({**BASE, **extra, "out-dir": str(out)})
    metrics = simulate(settings, with_baselines=False, with_audit=False).as_json()
    model = load_artifact(out / "model", load_store(out / "trust.json"))
    assert isinstance(model.model, TreeModule) and model.bins is not None
    return metrics, model, model.model.ensemble


def test_secagg_trees_equal_the_plain_runs_within_the_rounding(tmp_path: Path) -> None:
    plain, plain_model, plain_trees = _run(tmp_path / "plain")
    masked, masked_model, masked_trees = _run(tmp_path / "secagg", privacy="secagg")
    assert masked_model.bins == plain_model.bins and plain_model.bins is not None
    assert masked_model.spans == plain_model.spans and plain_model.spans  # the same histogram
    assert masked_trees.base_margin == plain_trees.base_margin
    most_bins = max(bin_layout(plain_model.bins).n_bins)
    # The bound derived in tests/test_trees_federated.py's fixed-point test: 4 institutions,
    # 3 trees, eta 0.3, lambda 1.
    e = 2 * most_bins * 4 * fixed_point.STEP_ERROR
    largest = max(float(np.max(np.abs(t.value))) for t in plain_trees.trees)
    tolerance = 3 * 0.3 * e * (1 + largest / 0.3)
    assert tolerance < 1e-6
    for i, (s, p) in enumerate(zip(masked_trees.trees, plain_trees.trees, strict=True)):
        for name in ("feature", "threshold", "default_left", "special_left", "left", "right"):
            assert np.array_equal(getattr(s, name), getattr(p, name)), f"tree {i}: {name}"
        np.testing.assert_allclose(s.value, p.value, rtol=0, atol=tolerance)
    assert abs(masked["federated"]["auc"] - plain["federated"]["auc"]) < 1e-6

    levels = masked["timing"]["trees"]["levels"]
    assert levels == plain["timing"]["trees"]["levels"]
    record = masked["privacy"]["secagg"]
    assert masked["privacy"]["setting"] == "secagg"
    assert record["institutions_aggregated"] == {str(v): 4 for v in range(1, levels + 1)}
    # Every SecAgg+ stage reply verified: 4 stages per level, 4 institutions; the grid round
    # is a SecAgg+ sum too (4 stages), then the query and the final evaluation, fairness (its
    # groups query, its counts' SecAgg+ sum) and the reference's SecAgg+ sum (4 stages).
    assert masked["security"]["rejected_replies"] == 0
    assert masked["security"]["verified_replies"] == 4 * (1 + 4 + 4 * levels + 1 + 1 + 4 + 4)
    manifest = json.loads((tmp_path / "secagg" / "model" / "manifest.json").read_text())
    assert [u["round"] for u in manifest["updates"]] == [
        level for level in range(1, levels + 1) for _ in range(4)
    ]
    assert all(len(u["accepted"]) == 4 for u in manifest["updates"])
    for r in masked["rounds"]:
        assert len(r["train_institutions"]) == 4 and r["errors"] == {}
    assert masked["timing"]["trees"]["institution_histogram_seconds_total"] > 0
