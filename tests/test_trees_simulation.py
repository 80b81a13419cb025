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
from jointcredit.federation import protocol
from jointcredit.federation.metrics import RunMetrics
from jointcredit.federation.settings import RunSettings
from jointcredit.models.artifact import MANIFEST_BINNING, load_artifact
from jointcredit.models.binning import merge_histograms
from jointcredit.models.binning.grid import grid_histogram, spans
from jointcredit.models.learners.gbdt import TreeModule, tree_params
from jointcredit.models.reference import Reference, count_rows
from jointcredit.models.trees import train
from jointcredit.models.trees.bins import bins_from_rows
from jointcredit.models.trees.bins import layout as bin_layout
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
    # The bins are the federated binning's: the institutions' grid histograms, summed.
    parts = [d.train.x for d in fed.institutions.values()]
    assert model.bins == bins_from_rows(parts, fed.schema, model.spec, settings.max_bins)
    # The signed card records the training spans of the same summed histogram.
    histogram = merge_histograms([grid_histogram(x, fed.schema) for x in parts])
    assert model.card.spans and model.spans == spans(histogram)
    pooled = fed.pooled_train()
    central = train(
        model.bins.codes(pooled.x),
        pooled.y,
        bin_layout(model.bins),
        tree_params(settings, fed.schema, model.bins.names),
    )
    federated = model.model.ensemble
    assert len(federated.trees) == len(central.trees) == 6
    for f, c in zip(federated.trees, central.trees, strict=True):
        assert np.array_equal(f.feature, c.feature) and np.array_equal(f.threshold, c.threshold)
        assert np.array_equal(f.default_left, c.default_left)
        np.testing.assert_allclose(f.value, c.value, rtol=0, atol=1e-9)


def test_the_trees_reference_counts_the_pooled_rows_on_their_own_bins(
    run: tuple[Path, dict[str, Any], RunSettings],
) -> None:
    out, metrics, settings = run
    model = load_artifact(out / "model", load_store(out / "trust.json"))
    assert model.reference is not None and model.bins is not None
    assert model.reference.bins == model.bins  # the ensemble's agreed bins
    pooled = load_federation(settings.data).pooled_train().x
    counts = count_rows(model.score(pooled), pooled, model.bins)
    assert model.reference == Reference.from_vector(counts, model.bins, metrics["institutions"])


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
    # The bins came from the federated binning's grid round: its signed replies are named.
    (binning,) = manifest[MANIFEST_BINNING]
    assert binning["message_type"] == protocol.BIN_GRID_QUERY
    assert sorted(binning["accepted"]) == sorted(metrics["institutions"])


def _cli(*args: str) -> tuple[int, str, str]:
    from typer.testing import CliRunner

    from jointcredit.cli.main import app

    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


def test_verify_score_and_decide_take_the_tree_artifact(
    run: tuple[Path, dict[str, Any], RunSettings],
) -> None:
    out = run[0]
    code, text, err = _cli("verify", str(out / "model"), "--trust", str(out / "trust.json"))
    assert code == 0 and "OK" in text and "bins.json: sha256" in text, err
    code, text, err = _cli("score", str(out / "model"), "--sample", "4")
    assert code == 0 and "gross_approved" in text, err
    code, text, err = _cli("decide", str(out / "model"), "--sample", "6")
    assert code == 0 and "Eligibility decisions" in text, err
    # A tampered bins file fails all of them.
    bins = out / "model" / "bins.json"
    saved = bins.read_bytes()
    try:
        bins.write_bytes(saved.replace(b"[", b"[-1e9,", 1))
        code, _, err = _cli("verify", str(out / "model"), "--trust", str(out / "trust.json"))
        assert code == 1 and "bins.json" in err
        assert _cli("decide", str(out / "model"))[0] == 2
    finally:
        bins.write_bytes(saved)


def test_the_service_serves_the_tree_artifact_one_batch_and_columnar(
    run: tuple[Path, dict[str, Any], RunSettings],
) -> None:
    """Over HTTP (FastAPI's TestClient): single, batch and columnar decisions on the simulated
    ensemble agree, and each model reason carries the decider's TreeSHAP contribution."""
    from fastapi.testclient import TestClient

    from jointcredit.service.app import create_app
    from jointcredit.service.auth import new_key
    from jointcredit.service.loader import load_service

    out = run[0]
    token = new_key(out / "keys.json", "bank-a")
    service = load_service(
        out / "model", out / "trust.json", api_keys=out / "keys.json",
        db_url=f"sqlite:///{out / 'audit.sqlite'}",
    )  # fmt: skip
    assert service.model_info.kind == "gbdt"
    headers = {"Authorization": f"Bearer {token}"}
    fed = load_federation(DataConfig(dataset="sba", institutions=4))
    frame = fed.pooled_test().x.head(20)
    rows = [
        {k: None if isinstance(v, float) and np.isnan(v) else v for k, v in r.items()}
        for r in frame.to_dict(orient="records")
    ]
    with TestClient(create_app(service)) as c:
        ones = []
        for r in rows[:5]:
            reply = c.post("/v1/decisions", json={"applicant": r, "context": {}}, headers=headers)
            assert reply.status_code == 200, reply.text
            ones.append(reply.json())
        body = {"applications": [{"applicant": r, "context": {}} for r in rows]}
        batch = c.post("/v1/decisions:batch", json=body, headers=headers)
        assert batch.status_code == 200, batch.text
        columns = {"columns": {f: [r[f] for r in rows] for f in rows[0]}}
        columnar = c.post("/v1/decisions:columnar?expand=true", json=columns, headers=headers)
        assert columnar.status_code == 200, columnar.text
    decided = batch.json()["decisions"]
    cols = columnar.json()["decisions"]
    assert cols["score"] == [d["score"] for d in decided]
    for one, d in zip(ones, decided, strict=False):
        assert (one["score"], one["decision"]) == (d["score"], d["decision"])
        assert one["reasons"] == d["reasons"] and len(one["reasons"]) <= 4
    model = load_artifact(out / "model", load_store(out / "trust.json"))
    assert isinstance(model.model, TreeModule)
    np.testing.assert_allclose(
        [d["probability_of_default"] for d in decided], model.predict_pd(frame), atol=1e-6
    )
    decider = service.decider
    k, shown = next(
        (k, model_reasons)
        for k, one in enumerate(ones)
        if (model_reasons := [r for r in one["reasons"] if r["kind"] == "model"])
    )
    _, contrib = decider.kernel(model.inputs_record(rows[k]))
    for r in shown:
        push = contrib[0][decider.features.index(r["feature"])]
        assert r["contribution"] == pytest.approx(push, abs=1e-4)
