"""The eligibility service's decider on a signed gradient-boosted-trees artifact (SBA lenders):
it scores bin codes, explains each decision by exact TreeSHAP contributions from the
portfolio-average applicant (the Shapley values, checked by enumerating every coalition, and
equal to `shap`'s TreeExplainer on the same ensemble), one applicant and a batch alike, with the
same reasons machinery as the other models, and refers applicants outside the training data."""

from __future__ import annotations

import math
import tomllib
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import shap
from service_helpers import signed_artifact
from tree_helpers import shapley_values

from jointcredit.data.catalog import DataConfig, load_federation
from jointcredit.models.artifact import ScoringModel, load_artifact
from jointcredit.models.binning import BinningSpec, CategoricalBins, NumericBins
from jointcredit.models.learners.gbdt import TreeModule
from jointcredit.models.preprocessing import NumericFeature
from jointcredit.models.trees import TreeEnsemble
from jointcredit.models.trees.tree import CATEGORY_SPLIT
from jointcredit.service.applicants import typical
from jointcredit.service.coverage import Coverage, numeric_span
from jointcredit.service.decide import Decider
from jointcredit.service.languages import PROFILE_REASON_CODE
from jointcredit.service.loader import StartupError, check_model
from jointcredit.service.policy import DEFAULT_POLICY, OutsideTraining, Policy
from jointcredit.service.reasons import TOWARD_APPROVAL, TOWARD_DEFAULT
from jointcredit.trust.store import load_store


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> ScoringModel:
    root = tmp_path_factory.mktemp("trees-service")
    signed_artifact(root, kind="gbdt")
    return load_artifact(root / "model", load_store(root / "trust.json"))


@pytest.fixture(scope="module")
def decider(model: ScoringModel) -> Decider:
    policy = Policy.model_validate(tomllib.loads(Path(DEFAULT_POLICY).read_text()))
    return Decider(model, policy)


def _ensemble(model: ScoringModel) -> TreeEnsemble:
    assert isinstance(model.model, TreeModule)
    return model.model.ensemble


def _loans(n: int) -> list[dict[str, Any]]:
    x = load_federation(DataConfig(dataset="sba")).pooled_test().x.head(n)
    return [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        for row in x.to_dict(orient="records")
    ]


def _columns(rows: list[dict[str, Any]], names: list[str]) -> dict[str, list[Any]]:
    return {f: [r[f] for r in rows] for f in names}


def test_tree_reasons_are_exact_shapley_values_from_the_average_applicant(
    model: ScoringModel, decider: Decider
) -> None:
    assert model.bins is not None
    ens = _ensemble(model)
    loans = _loans(40)
    codes = model.inputs_columns(_columns(loans, decider.features))
    pds, contrib = decider.kernel(codes)
    np.testing.assert_allclose(pds, model.predict_pd(pd.DataFrame(loans)), rtol=1e-12)
    average = typical(model.spec, model.card.data_schema.features)
    ref = model.inputs_record(average)[0].astype(np.int64)
    baseline = ens.margin(ref[None, :])[0]
    # They add up to the log-odds minus the average applicant's...
    np.testing.assert_allclose(
        contrib.sum(axis=1), ens.margin(codes.astype(np.int64)) - baseline, atol=1e-6
    )
    # ...are the Shapley values of the game against that applicant (columns: the decider's
    # feature order; the enumeration: the bins' order)...
    order = [model.bins.names.index(f) for f in decider.features]
    for k in (0, 7, 23):
        exact = shapley_values(ens, codes[k].astype(np.int64), ref)
        np.testing.assert_allclose(contrib[k], exact[order], atol=1e-6)
    # ...and equal shap's TreeExplainer on the same ensemble and background (set splits
    # as rank columns of their own, added up per feature).
    assert any(np.any(t.threshold == CATEGORY_SPLIT) for t in ens.trees)
    explainer = shap.TreeExplainer(
        ens.shap_model(), data=ens.shap_inputs(ref[None, :]), feature_perturbation="interventional"
    )
    columns = explainer.shap_values(ens.shap_inputs(codes.astype(np.int64)))
    reference = ens.shap_by_feature(columns)
    np.testing.assert_allclose(contrib, reference[:, order], atol=1e-6)
    assert explainer.expected_value == pytest.approx(baseline, abs=1e-9)
    # The average applicant itself has nothing to explain; a change in one feature is all
    # that feature's.
    _, none = decider.kernel(ref[None, :].astype(np.float32))
    assert np.abs(none).max() < 1e-12
    j = next(j for j in range(len(ref)) if ref[j] != codes[0, j])
    moved = ref.copy()
    moved[j] = codes[0, j]
    _, one = decider.kernel(moved[None, :].astype(np.float32))
    f = order.index(j)
    assert one[0, f] == pytest.approx(ens.margin(moved[None, :])[0] - baseline, rel=1e-12)
    assert np.abs(np.delete(one[0], f)).max() < 1e-12


def test_one_applicant_a_batch_and_columns_decide_alike(decider: Decider) -> None:
    loans = _loans(120)
    batch = decider.decide(loans, [{}] * len(loans), [None] * len(loans))
    columns = decider.decide_columns(
        _columns(loans, decider.features), {c: [None] * len(loans) for c in decider.policy.context},
        [None] * len(loans),
    )  # fmt: skip
    assert columns.score == batch.score and columns.decision == batch.decision
    for k in (0, 5, 61, 119):
        one = decider.decide_one(loans[k], {}, None)
        assert one.score == [batch.score[k]] and one.decision == [batch.decision[k]]
        assert one.reasons(0) == batch.reasons(k) == columns.reasons(k)
        np.testing.assert_allclose(one.contributions[0], batch.contributions[k], atol=1e-9)


def test_tree_reasons_follow_the_reason_rules(model: ScoringModel) -> None:
    """At most max_reasons; a model reason's direction is its contribution's sign and its text
    says so; an approved applicant's first reason is not one toward default; every decline has
    reasons (when nothing pushed toward default, the profile's risk first). (Cut-offs within
    this small ensemble's scores, so that some applicants are approved.)"""
    policy = tomllib.loads(Path(DEFAULT_POLICY).read_text())
    policy["cutoffs"] = {"approve": 560, "decline": 530}
    decider = Decider(model, Policy.model_validate(policy))
    loans = _loans(300)
    table = decider.decide(loans, [{}] * len(loans), [None] * len(loans))
    assert {"approve", "decline"} <= set(table.decision)
    model_reasons = 0
    for k in range(len(loans)):
        reasons = table.reasons(k)
        assert len(reasons) <= decider.max_reasons
        if table.decision[k] == "approve" and reasons:
            assert reasons[0]["direction"] != TOWARD_DEFAULT
        want = TOWARD_APPROVAL if table.decision[k] == "approve" else TOWARD_DEFAULT
        if table.decision[k] != "approve":
            assert reasons  # every decline says why
            if reasons[0]["code"] == PROFILE_REASON_CODE:  # nothing pushed toward default
                want = TOWARD_APPROVAL
        for r in reasons:
            if r["kind"] != "model":
                continue
            model_reasons += 1
            push = table.contributions[k][decider.features.index(r["feature"])]
            assert (push > 0) == (r["direction"] == TOWARD_DEFAULT)
            assert r["direction"] == want
            assert r["code"] == f"F_{r['feature'].upper()}"
    assert model_reasons > len(loans)


def test_applicants_outside_the_trees_training_data_are_referred(
    model: ScoringModel, decider: Decider
) -> None:
    assert model.bins is not None
    average = typical(model.spec, model.card.data_schema.features)
    plain = decider.decide_one(average, {}, None)
    assert plain.decision != ["refer"] and plain.unknown_values == plain.out_of_range == [{}]
    categorical = next(b for b in model.bins.features if b.kind == "categorical")
    numeric = next(f for f in model.spec.features
                   if isinstance(f, NumericFeature) and f.transform == "log1p")  # fmt: skip
    numeric_bins = model.bins.feature(numeric.name)
    assert isinstance(numeric_bins, NumericBins)
    edges = numeric_bins.edges
    _, hi = numeric_span(numeric, model.spec.clip, model.card.data_schema.features[numeric.name])
    assert edges[-1] < hi  # beyond the last edge is not beyond the training data
    for name, value in ((categorical.name, "never-seen-value"), (numeric.name, hi * 10)):
        table = decider.decide_one({**average, name: value}, {}, None)
        assert table.decision == ["refer"]
        first = table.reasons(0)[0]
        assert first["code"] == "OUTSIDE_TRAINING_DATA" and first["feature"] == name
    inside = decider.decide_one({**average, numeric.name: (edges[-1] + hi) / 2}, {}, None)
    assert inside.unknown_values == [{}] and inside.out_of_range == [{}]
    # The batch path refers the same applicants.
    rows = [{**average, categorical.name: "never-seen-value"}, average]
    batch = decider.decide(rows, [{}, {}], [None, None])
    assert batch.decision[0] == "refer" and batch.unknown_values[0] == {
        categorical.name: "never-seen-value"
    }


def test_start_up_checks_trees(model: ScoringModel, tmp_path: Path) -> None:
    check_model(model)
    signed_artifact(tmp_path, kind="gbdt", zero=True)
    empty = load_artifact(tmp_path / "model", load_store(tmp_path / "trust.json"))
    with pytest.raises(StartupError, match="all zero"):
        check_model(empty)


def test_one_record_and_columns_bin_like_a_frame() -> None:
    bins = BinningSpec(
        features=[
            NumericBins(name="amount", edges=[10.0, 20.0], special=[98.0]),
            CategoricalBins(name="sector", groups=[["retail"], ["farm"], ["__other__"]]),
        ]
    )
    values = [5, 10.0, 9.999999, 20, 99.5, -1e300, math.inf, None, math.nan, 98]
    sectors = ["retail", "farm", "mining", None, "retail", "", "farm", math.nan, "Retail", "farm"]
    rows = [{"amount": a, "sector": s} for a, s in zip(values, sectors, strict=True)]
    frame = bins.codes(pd.DataFrame(rows))
    columns = bins.codes(_columns(rows, ["amount", "sector"]))
    records = np.array([bins.codes_record(r) for r in rows])
    assert frame.tolist() == columns.tolist() == records.tolist()
    # edges[i-1] <= v < edges[i]; 3: the special value 98; 4: missing
    assert frame[:, 0].tolist() == [0, 1, 0, 2, 2, 0, 2, 4, 4, 3]
    assert frame[:, 1].tolist() == [0, 1, 2, 3, 0, 2, 1, 3, 2, 1]


def test_shapley_enumeration_checks_itself() -> None:
    """The enumeration the tree reasons are checked against: on a model that is a sum of
    one-feature terms, each Shapley value is that feature's own change."""
    codes = np.array(list(combinations(range(4), 2)) * 20)
    y = (codes[:, 0] == 0).astype(float)
    from jointcredit.models.trees import BinLayout, TreeParams, train

    ens = train(codes, y, BinLayout((5, 5), (4, 4)), TreeParams(n_trees=3, max_depth=1))
    x, ref = np.array([0, 3]), np.array([2, 1])
    phi = shapley_values(ens, x, ref)
    assert phi.sum() == pytest.approx(ens.margin(x[None])[0] - ens.margin(ref[None])[0])
    for j in range(2):
        moved = ref.copy()
        moved[j] = x[j]
        assert phi[j] == pytest.approx(ens.margin(moved[None])[0] - ens.margin(ref[None])[0])


def test_trees_categories_are_the_ones_their_bins_tell_apart(model: ScoringModel) -> None:
    """A category the preprocessing knows but the bins do not (they put it with every other
    value) is outside what the trees were trained to tell apart."""
    assert model.bins is not None
    feature = next(b for b in model.bins.features if isinstance(b, CategoricalBins))
    dropped = feature.groups[0][0]
    bins = BinningSpec(features=[
        b.model_copy(update={"groups": b.groups[1:]}) if b is feature else b
        for b in model.bins.features
    ])  # fmt: skip
    schema = model.card.data_schema.features
    average = {**typical(model.spec, schema), feature.name: dropped}
    assert Coverage(model.spec, schema, OutsideTraining()).one(average) == ({}, {})
    unseen, _ = Coverage(model.spec, schema, OutsideTraining(), bins=bins).one(average)
    assert unseen == {feature.name: dropped}
