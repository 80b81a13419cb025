"""A gradient-boosted-trees federation end to end in a real Flower simulation: signed
histogram replies, the ensemble equal to the central engine's on the pooled rows, the signed
artifact, the XGBoost baseline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jointcredit.data.catalog import DataConfig, load_federation
from jointcredit.federation.metrics import RunMetrics
from jointcredit.federation.settings import RunSettings
from jointcredit.models.artifact import load_artifact
from jointcredit.models.learners.gbdt import TreeModule, tree_params
from jointcredit.models.trees import train
from jointcredit.simulations.simulate import simulate
from jointcredit.trust.store import load_store

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], RunSettings]:
    out = tmp_path_factory.mktemp("trees") / "out"
    settings = RunSettings.from_run_config(
        {
            "model": "gbdt",
            "dataset": "sba",
            "institutions": 4,
            "trees": 6,
            "max-depth": 4,
            "max-bins": 32,
            "tree-learning-rate": 0.3,
            "seed": 5,
            "out-dir": str(out),
        }
    )
    metrics = simulate(settings).as_json()
    assert RunMetrics.read(out / "metrics.json").as_json() == metrics
    return out, metrics, settings


def test_the_federated_ensemble_is_the_central_engines(
    run: tuple[Path, dict[str, Any], RunSettings],
) -> None:
    out, _, settings = run
    model = load_artifact(out / "model", load_store(out / "trust.json"))
    assert model.bins is not None and isinstance(model.model, TreeModule)
    fed = load_federation(
        DataConfig(dataset="sba", institutions=4, seed=settings.seed, test_fraction=0.2)
    )
    pooled = fed.pooled_train()
    central = train(
        model.bins.codes(pooled.x),
        pooled.y,
        model.bins.layout(),
        tree_params(settings, fed.schema, model.bins.names),
    )
    federated = model.model.ensemble
    assert len(federated.trees) == len(central.trees) == 6
    for f, c in zip(federated.trees, central.trees, strict=True):
        assert np.array_equal(f.feature, c.feature) and np.array_equal(f.threshold, c.threshold)
        assert np.array_equal(f.default_left, c.default_left)
        np.testing.assert_allclose(f.value, c.value, rtol=0, atol=1e-9)


def test_metrics_rounds_baselines_and_timing(
    run: tuple[Path, dict[str, Any], RunSettings],
) -> None:
    out, metrics, _ = run
    assert metrics["trained_rounds"] == 6
    assert [r["round"] for r in metrics["rounds"]] == list(range(1, 7))
    for r in metrics["rounds"]:
        assert r["errors"] == {} and len(r["train_institutions"]) == 4 and "central" in r
    assert metrics["federated"]["auc"] > 0.6
    central = metrics["centralized"]
    assert central["auc"] > 0.6 and central["same_bins_auc"] == pytest.approx(
        metrics["federated"]["auc"], abs=1e-6
    )
    assert metrics["local_only"]["mean_auc"] is not None
    trees = metrics["timing"]["trees"]
    assert 6 <= trees["levels"] <= 24 and trees["exchange_seconds"] > 0
    assert metrics["security"]["rejected_replies"] == 0
    assert metrics["security"]["verified_replies"] >= 4 * (trees["levels"] + 2)
    assert metrics["personalization"]["method"] == "trees"  # global + 10 own trees each
    for row in metrics["per_institution"].values():
        assert row["auc"] > 0.5 and row["auc_personalized"] > 0.5
    manifest = json.loads((out / "model" / "manifest.json").read_text())
    assert "bins.json" in manifest["files"]
    assert len(manifest["updates"]) == trees["levels"]  # each level's signed histograms
