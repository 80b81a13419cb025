"""The training span a binned scorecard records (`binning.json`'s `spans`), and gradient-boosted
trees in their model card: read from the summed fine-grid histogram, trimmed so that neither
end is one borrower's value, the same for the federation as for the pooled rows, and used by
the service to refer values beyond it; binning tables and tree artifacts written before it
existed still load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from service_helpers import signed_artifact

from jointcredit.data.catalog import DataConfig, load_federation
from jointcredit.data.schema import FeatureSpec, Schema
from jointcredit.models.artifact import ScoringModel, load_artifact
from jointcredit.models.binning import BinningTable, Classing, binning_from_rows
from jointcredit.models.binning.grid import TAIL_ROWS, grid_histogram, span, spans
from jointcredit.service.decide import Decider
from jointcredit.service.policy import load_policy
from jointcredit.trust.store import load_store

SCHEMA = Schema(label="y", positive=1,
                features={"x": FeatureSpec(type="numeric", min=0, special=(-1.0,))})  # fmt: skip


def _histogram(values: list[float]) -> object:
    return grid_histogram(pd.DataFrame({"x": values}), SCHEMA).features["x"]


def test_the_span_leaves_out_the_extreme_rows_and_lands_on_grid_boundaries() -> None:
    rng = np.random.default_rng(0)
    values = [*rng.uniform(10.0, 20.0, 1000).round(3), 0.5, 9_999.0, -1.0, -1.0]
    lo, hi = span(_histogram(values), 3)  # type: ignore[arg-type,misc]
    ordered = sorted(v for v in values if v != -1.0)
    # Fewer than TAIL_ROWS rows below / above it; the k-th from each end inside it.
    assert sum(v < lo for v in values if v != -1.0) < TAIL_ROWS
    assert sum(v >= hi for v in ordered) < TAIL_ROWS
    assert lo <= ordered[TAIL_ROWS - 1] < hi and lo <= ordered[-TAIL_ROWS] < hi
    assert 10.0 <= lo < 10.2 and 19.8 < hi <= 20.1  # the lone 0.5 and 9,999 are left out
    assert float(f"{lo:.3g}") == lo and float(f"{hi:.3g}") == hi  # round grid numbers


def test_too_few_rows_have_no_span() -> None:
    assert span(_histogram([float(v) for v in range(2 * TAIL_ROWS - 1)]), 3) is None  # type: ignore[arg-type]
    assert span(_histogram([float(v) for v in range(2 * TAIL_ROWS)]), 3) is not None  # type: ignore[arg-type]


def test_the_federations_span_is_the_pooled_rows_span() -> None:
    fed = load_federation(DataConfig(dataset="synthetic", institutions=4, synthetic_rows=800))
    vocabularies = {n: [] for n, f in fed.schema.features.items() if f.type == "categorical"}
    parts = [(d.train.x, d.train.y) for d in fed.institutions.values()]
    federated = binning_from_rows(parts, fed.schema, vocabularies, Classing())
    pooled = fed.pooled_train()
    alone = binning_from_rows([(pooled.x, pooled.y)], fed.schema, vocabularies, Classing())
    assert federated.spans == alone.spans
    numeric = {n for n, f in fed.schema.features.items() if f.type == "numeric"}
    assert set(federated.spans) == numeric
    histogram = grid_histogram(pooled.x, fed.schema)
    assert federated.spans == spans(histogram)
    # The special codes are not magnitudes: the delinquency span stays within real counts.
    assert federated.spans["delinquencies_24m"][1] <= 95


def test_a_binning_table_written_before_spans_still_loads() -> None:
    fed = load_federation(DataConfig(dataset="synthetic", institutions=2, synthetic_rows=300))
    vocabularies = {n: [] for n, f in fed.schema.features.items() if f.type == "categorical"}
    parts = [(d.train.x, d.train.y) for d in fed.institutions.values()]
    table = binning_from_rows(parts, fed.schema, vocabularies, Classing())
    old = json.loads(table.model_dump_json())
    del old["spans"]
    assert BinningTable.model_validate(old).spans == {}


@pytest.fixture(scope="module")
def scorecard(tmp_path_factory: pytest.TempPathFactory) -> ScoringModel:
    root = tmp_path_factory.mktemp("span")
    return load_artifact(signed_artifact(root, dataset="synthetic", kind="scorecard"),
                         load_store(root / "trust.json"))  # fmt: skip


def test_the_service_refers_a_scorecards_applicant_beyond_its_recorded_span(
    scorecard: ScoringModel,
) -> None:
    assert scorecard.binning is not None and scorecard.binning.spans
    decider = Decider(scorecard, load_policy())
    lo, hi = scorecard.binning.spans["open_trades"]
    pooled = load_federation(DataConfig(dataset="synthetic", institutions=4, synthetic_rows=800))
    applicant = {k: (None if v != v else v)
                 for k, v in pooled.pooled_test().x.iloc[0].to_dict().items()}  # fmt: skip
    applicant["open_trades"] = (lo + hi) / 2
    inside = decider.decide_one(applicant, {}, None)
    assert inside.out_of_range == [{}] or "open_trades" not in inside.out_of_range[0]
    applicant["open_trades"] = hi + 1
    beyond = decider.decide_one(applicant, {}, None)
    assert beyond.decision == ["refer"] and "open_trades" in beyond.out_of_range[0]
    (reason,) = [r for r in beyond.reasons(0) if r["feature"] == "open_trades"]
    assert reason["code"] == "OUTSIDE_TRAINING_DATA" and f"to {hi:g})" in reason["text"]
    applicant["open_trades"] = 6.0
    assert "open_trades" not in decider.decide_one(applicant, {}, None).out_of_range[0]


def test_old_artifacts_keep_mean_and_sd_for_other_models(tmp_path: Path) -> None:
    model = load_artifact(signed_artifact(tmp_path, dataset="synthetic"),
                          load_store(tmp_path / "trust.json"))  # fmt: skip
    assert model.binning is None
    decider = Decider(model, load_policy())
    f = next(f for f in model.spec.features if f.name == "open_trades")
    _, hi = decider.coverage.spans["open_trades"]
    assert hi == pytest.approx(f.mean + model.spec.clip * f.std)  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> ScoringModel:
    root = tmp_path_factory.mktemp("tree-span")
    return load_artifact(signed_artifact(root, dataset="synthetic", kind="gbdt", spans=True),
                         load_store(root / "trust.json"))  # fmt: skip


def _applicant() -> dict[str, object]:
    pooled = load_federation(DataConfig(dataset="synthetic", institutions=4, synthetic_rows=800))
    return {k: (None if v != v else v) for k, v in pooled.pooled_test().x.iloc[0].to_dict().items()}


def test_the_service_refers_a_tree_models_applicant_beyond_its_recorded_span(
    trees: ScoringModel,
) -> None:
    """The trees' signed model card carries the span of the summed histogram their bins came
    from; beyond it the applicant is referred with the outside-training-data reason."""
    assert trees.bins is not None and trees.binning is None and trees.card.spans
    assert trees.spans == trees.card.spans
    decider = Decider(trees, load_policy())
    lo, hi = trees.spans["open_trades"]
    f = next(f for f in trees.spec.features if f.name == "open_trades")
    assert hi < f.mean + trees.spec.clip * f.std  # type: ignore[union-attr]  # tighter
    applicant = _applicant()
    applicant["open_trades"] = (lo + hi) / 2
    inside = decider.decide_one(applicant, {}, None)
    assert "open_trades" not in inside.out_of_range[0]
    applicant["open_trades"] = hi + 1
    beyond = decider.decide_one(applicant, {}, None)
    assert beyond.decision == ["refer"] and "open_trades" in beyond.out_of_range[0]
    (reason,) = [r for r in beyond.reasons(0) if r["feature"] == "open_trades"]
    assert reason["code"] == "OUTSIDE_TRAINING_DATA" and f"to {hi:g})" in reason["text"]


def test_a_tree_artifact_written_before_spans_loads_and_keeps_mean_and_sd(
    tmp_path: Path,
) -> None:
    model = load_artifact(signed_artifact(tmp_path, dataset="synthetic", kind="gbdt"),
                          load_store(tmp_path / "trust.json"))  # fmt: skip
    card = json.loads((tmp_path / "model" / "model.json").read_text())
    assert "spans" not in card and model.card.spans is None and model.spans == {}
    decider = Decider(model, load_policy())
    f = next(f for f in model.spec.features if f.name == "open_trades")
    _, hi = decider.coverage.spans["open_trades"]
    assert hi == pytest.approx(f.mean + model.spec.clip * f.std)  # type: ignore[union-attr]
