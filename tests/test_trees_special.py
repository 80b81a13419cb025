"""Special values (the schema's `special = [96, 98]`) in the trees: ordered splits range over
the regular bins only, each special bin (like the missing bin) goes to the side the split
learned, monotone constraints order the regular values only, and TreeSHAP explains the
learned sides exactly."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shap
from service_helpers import signed_artifact
from tree_helpers import shapley_values

from jointcredit.data.catalog import DataConfig, load_federation
from jointcredit.models.artifact import load_artifact
from jointcredit.models.binning import BinningSpec, NumericBins
from jointcredit.models.learners.gbdt import TreeModule
from jointcredit.models.trees import TreeEnsemble, TreeParams, train
from jointcredit.models.trees.bins import layout as bin_layout
from jointcredit.models.trees.tree import LEAF
from jointcredit.service.applicants import typical
from jointcredit.service.decide import Decider
from jointcredit.service.policy import DEFAULT_POLICY, Policy
from jointcredit.trust.store import load_store

BINS = BinningSpec(
    features=[
        NumericBins(name="delinquencies", edges=[1.0, 2.0, 3.0, 5.0, 8.0], special=[96.0, 98.0]),
        NumericBins(name="utilisation", edges=[0.25, 0.5, 0.75, 1.0]),
    ]
)
NO_FILE, TOO_NEW = 96.0, 98.0


def _rows(seed: int, n: int = 6000) -> tuple[pd.DataFrame, np.ndarray]:
    """Risk rises with delinquencies (0..12) and utilisation; 96 is riskier than any count,
    98 safer than none, missing in between."""
    rng = np.random.default_rng(seed)
    delinquencies = rng.integers(0, 13, n).astype(np.float64)
    kind = rng.random(n)
    delinquencies[kind < 0.1] = NO_FILE
    delinquencies[(kind >= 0.1) & (kind < 0.2)] = TOO_NEW
    delinquencies[(kind >= 0.2) & (kind < 0.27)] = np.nan
    utilisation = rng.uniform(0, 1.2, n)
    logit = np.select(
        [delinquencies == NO_FILE, delinquencies == TOO_NEW, np.isnan(delinquencies)],
        [2.5, -3.0, 0.0],
        default=-1.5 + 0.25 * np.nan_to_num(delinquencies),
    )
    logit = logit + 1.5 * utilisation - 0.5
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float64)
    return pd.DataFrame({"delinquencies": delinquencies, "utilisation": utilisation}), y


def _ensemble(monotone: tuple[int, ...] = (), n_trees: int = 20) -> TreeEnsemble:
    x, y = _rows(3)
    params = TreeParams(n_trees=n_trees, max_depth=3, learning_rate=0.3, monotone=monotone)
    return train(BINS.codes(x), y, bin_layout(BINS), params)


def _pd(ens: TreeEnsemble, delinquencies: float, utilisation: float = 0.6) -> float:
    codes = BINS.codes(
        pd.DataFrame({"delinquencies": [delinquencies], "utilisation": [utilisation]})
    )
    return float(ens.predict_pd(codes)[0])


def test_ordered_splits_range_over_the_regular_bins_and_specials_take_a_learned_side() -> None:
    layout = bin_layout(BINS)
    regular = layout.ordered_bins(0)
    assert (regular, layout.n_special(0), layout.missing[0]) == (6, 2, 8)
    ens = _ensemble()
    on_feature = [(t, n) for t in ens.trees for n in np.flatnonzero(t.feature == 0)]
    assert on_feature
    assert all(t.threshold[n] < regular for t, n in on_feature)
    # The root of the first tree isolates the riskiest values: 96 goes with the high counts
    # and 98 with the low ones, whatever their codes' order.
    first = ens.trees[0]
    assert first.feature[0] == 0 and first.special_left[0] != 0
    # The risk the rows carry, in the model's order: 98 < low counts < high counts < 96.
    assert _pd(ens, TOO_NEW) < _pd(ens, 0.0) < _pd(ens, 12.0) < _pd(ens, NO_FILE)
    assert _pd(ens, 0.0) < _pd(ens, np.nan) < _pd(ens, NO_FILE)


@pytest.mark.parametrize("direction", [1, -1])
def test_monotone_constraints_order_regular_values_on_every_path_not_the_specials(
    direction: int,
) -> None:
    ens = _ensemble(monotone=(direction, 0))
    counts = np.arange(0, 13, dtype=np.float64)
    for u in np.linspace(0, 1.2, 25):  # every other value of the other feature
        pds = [_pd(ens, c, u) for c in counts]
        steps = np.diff(pds) * direction
        assert np.all(steps >= -1e-12), f"utilisation {u}: {pds}"
        if direction > 0:
            # The special values keep their own risk, outside the regular values' order.
            assert _pd(ens, TOO_NEW, u) < pds[0] and _pd(ens, NO_FILE, u) > pds[-1]


def test_tree_shap_explains_learned_sides_exactly() -> None:
    """shap's TreeExplainer on the ensemble's threshold form (interventional, one reference)
    equals the Shapley values enumerated from the ensemble's own scoring, and its
    path-dependent values add up to each row's log-odds."""
    ens = _ensemble(n_trees=8)
    assert any(np.any(t.special_left) for t in ens.trees)
    x, _ = _rows(9, n=200)
    codes = BINS.codes(x).astype(np.int64)
    ref = BINS.codes(pd.DataFrame({"delinquencies": [2.0], "utilisation": [0.6]}))[0]
    explainer = shap.TreeExplainer(
        ens.shap_model(), data=ens.shap_inputs(ref[None, :]), feature_perturbation="interventional"
    )
    values = explainer.shap_values(ens.shap_inputs(codes))
    special_rows = np.flatnonzero(np.isin(x["delinquencies"], [NO_FILE, TOO_NEW]))[:10]
    for k in [*special_rows, 0, 1, 2]:
        exact = shapley_values(ens, codes[k], ref.astype(np.int64))
        # shap's extension returns single-precision values: equal to that precision.
        np.testing.assert_allclose(values[k], exact, rtol=1e-6, atol=1e-7)
    path = shap.TreeExplainer(ens.shap_model())
    np.testing.assert_allclose(
        path.shap_values(ens.shap_inputs(codes)).sum(axis=1) + path.expected_value,
        ens.margin(codes),
        atol=1e-6,
    )
    for t in ens.shap_model()["trees"]:
        internal = t["children_left"] >= 0
        assert np.all(t["features"][internal] >= 0) and np.all(t["features"][~internal] == -2)
    assert all(t.feature[0] != LEAF for t in ens.trees)


def test_the_service_decides_an_applicant_with_a_special_value(tmp_path: Path) -> None:
    """A gbdt artifact on the synthetic bureau-style lenders: an applicant whose delinquency
    count is 96 ("no file") is coded into that special bin on the one-applicant and batch
    paths alike, is no number out of range, and is explained by exact Shapley values."""
    signed_artifact(tmp_path, dataset="synthetic", kind="gbdt")
    model = load_artifact(tmp_path / "model", load_store(tmp_path / "trust.json"))
    assert model.bins is not None
    policy = Policy.model_validate(tomllib.loads(Path(DEFAULT_POLICY).read_text()))
    decider = Decider(model, policy)
    name = "delinquencies_24m"
    feature = model.bins.feature(name)
    assert isinstance(feature, NumericBins) and feature.special == [NO_FILE, TOO_NEW]
    average = typical(model.spec, model.card.data_schema.features)
    applicants = [{**average, name: NO_FILE}, {**average, name: TOO_NEW}, average]
    j = model.bins.names.index(name)
    codes = [int(model.inputs_record(a)[0, j]) for a in applicants]
    assert codes[:2] == [feature.regular, feature.regular + 1]
    batch = decider.decide(applicants, [{}] * 3, [None] * 3)
    for k, applicant in enumerate(applicants):
        one = decider.decide_one(applicant, {}, None)
        assert one.out_of_range == [{}]
        assert (one.score[0], one.decision[0]) == (batch.score[k], batch.decision[k])
        assert one.reasons(0) == batch.reasons(k)
    assert isinstance(model.model, TreeModule)
    ens = model.model.ensemble
    assert any(np.any(t.special_left) for t in ens.trees)
    ref = model.inputs_record(average)[0].astype(np.int64)
    order = [model.bins.names.index(f) for f in decider.features]
    # Real applicants with the special values: every feature may differ from the average's.
    x = load_federation(DataConfig(dataset="synthetic", institutions=4, synthetic_rows=800))
    rows = x.pooled_test().x
    rows = rows[rows[name].isin([NO_FILE, TOO_NEW])].head(4)
    assert len(rows)
    for codes in model.bins.codes(rows).astype(np.int64):
        _, contrib = decider.kernel(codes[None, :].astype(np.float32))
        exact = shapley_values(ens, codes, ref)
        np.testing.assert_allclose(contrib[0], exact[order], rtol=1e-6, atol=1e-7)


def test_an_ensemble_stored_before_special_sides_reads_as_sending_none_left() -> None:
    ens = _ensemble(n_trees=3)
    plain = TreeEnsemble(
        ens.base_margin,
        ens.missing,
        tuple(replace(t, special_left=np.zeros_like(t.special_left)) for t in ens.trees),
    )
    arrays = plain.to_arrays()
    del arrays["special_left"]
    loaded = TreeEnsemble.from_arrays(arrays)
    assert loaded.digest() == plain.digest()
    codes = BINS.codes(_rows(5, n=300)[0])
    np.testing.assert_array_equal(loaded.margin(codes), plain.margin(codes))
