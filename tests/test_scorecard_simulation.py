"""`--model scorecard` end to end in a real Flower simulation: the binning rounds, training on
WOE, the signed artifact with its IV and points tables, the baselines and the service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_simulation import _settings

from jointcredit.data.catalog import load_federation
from jointcredit.federation.settings import RunSettings
from jointcredit.models.artifact import load_artifact
from jointcredit.models.binning import CategoricalBins, Classing, bin_codes, binning_from_rows
from jointcredit.models.binning.encoding import WoeFeature
from jointcredit.models.learners import feature_columns, learner
from jointcredit.service.loader import check_model
from jointcredit.simulations.simulate import simulate
from jointcredit.trust.store import load_store

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], RunSettings]:
    out = tmp_path_factory.mktemp("scorecard") / "out"
    settings = _settings(out, model="scorecard")
    return out, simulate(settings, with_audit=False).as_json(), settings


def test_a_scorecard_run_writes_a_signed_points_table(
    run: tuple[Path, dict[str, Any], RunSettings],
) -> None:
    out, metrics, settings = run
    model = load_artifact(out / "model", load_store(out / "trust.json"))
    assert model.card.architecture.kind == "scorecard" and model.binning is not None
    assert model.card.scorecard is not None
    assert (out / "model" / "scorecard.csv").read_text() == model.card.scorecard.to_csv()
    check_model(model)
    # The signed manifest names the verified binning replies the bins came from.
    bins = model.verified.manifest["binning-replies"]
    assert [len(b["accepted"]) for b in bins] == [4, 4]
    # The federation's bins are those of the same steps on the institutions' rows.
    fed = load_federation(settings.data)
    vocabularies = {
        f.name: sorted(level for g in f.bins.groups for level in g if level != "__other__")
        for f in model.spec.features
        if isinstance(f, WoeFeature) and isinstance(f.bins, CategoricalBins)
    }
    parts = [(d.train.x, d.train.y) for d in fed.institutions.values()]
    table = binning_from_rows(parts, fed.schema, vocabularies, Classing())
    assert table == model.binning
    # Adding points scores every test applicant as the model does (as the service scores).
    x = fed.pooled_test().x
    codes = bin_codes(x, model.binning.bins)
    names = [f.name for f in model.spec.features]
    kernel = learner("scorecard").kernel(model.model, feature_columns(model.spec))
    pd_, _ = kernel(model.spec.transform(x))
    scores = model.card.score_scale.score(pd_)
    assert (model.card.scorecard.score(codes, names) == scores).all()
    # It learned, and it is compared with its centralized twin and local-only scorecards.
    assert metrics["config"]["model"] == "scorecard"
    assert metrics["federated"]["auc"] > 0.65
    assert metrics["centralized"]["auc"] > 0.65 and metrics["centralized"]["optimum_auc"] > 0.65
    assert metrics["local_only"]["mean_auc"] > 0.55
    assert np.isfinite([r["auc"] for r in metrics["per_institution"].values()]).all()
    assert metrics["personalization"]["method"] == "hierarchical"


def test_under_secagg_the_bins_come_from_masked_sums(
    tmp_path: Path, run: tuple[Path, dict[str, Any], RunSettings]
) -> None:
    """SecAgg+ sums the histograms and counts (the coordinator sees no institution's own):
    the same bins, WOE and IV as the plain run's signed replies."""
    _, _, plain_settings = run
    settings = _settings(tmp_path / "out", model="scorecard", privacy="secagg", rounds=2)
    metrics = simulate(settings, with_baselines=False, with_audit=False).as_json()
    assert metrics["privacy"]["setting"] == "secagg"
    model = load_artifact(tmp_path / "out" / "model", load_store(tmp_path / "out" / "trust.json"))
    plain = load_artifact(
        Path(plain_settings.out_dir) / "model",
        load_store(Path(plain_settings.out_dir) / "trust.json"),
    )
    assert model.binning == plain.binning
    stages = model.verified.manifest["binning-replies"]
    assert stages and all(len(s["accepted"]) == 4 for s in stages)
    assert [r["round"] for r in metrics["rounds"]] == [1, 2]
