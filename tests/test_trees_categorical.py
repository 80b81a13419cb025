"""Categorical features split by sets of categories (XGBoost's partition and one-hot splits on
the same bins), stored, exchanged and explained exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shap
import xgboost as xgb
from flwr.app import Array
from tree_helpers import shapley_values

from jointcredit.federation import protocol
from jointcredit.models.trees import BinLayout, TreeEnsemble, TreeParams, train
from jointcredit.models.trees.exchange import tree_of, tree_record
from jointcredit.models.trees.shapley import ReferenceShapley
from jointcredit.models.trees.tree import CATEGORY_SPLIT
from jointcredit.simulations.tree_baselines import xgboost_inputs, xgboost_matrix, xgboost_params

# Feature 0: 14 categories (code 13 never seen in training) whose risks are scattered over
# the codes; feature 1: 3 categories (one-hot splits); feature 2: numeric; every feature has
# a missing code.
LAYOUT = BinLayout((15, 4, 21), (14, 3, 20), (0, 0, 0), (True, True, False))
RISK = np.array([0.9, -1.2, 0.1, 1.5, -0.4, -1.0, 0.7, 0.0, -1.6, 1.1, -0.2, 0.4, -0.8, 0.0])


def _data(seed: int = 0, n: int = 6000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    codes = np.column_stack([rng.integers(0, 13, n), rng.integers(0, 3, n), rng.integers(0, 20, n)])
    for j, m in enumerate(LAYOUT.missing):
        codes[rng.random(n) < 0.07, j] = m
    present = codes[:, 0] < 13
    logit = np.where(present, RISK[np.minimum(codes[:, 0], 13)], 0.5)
    logit += np.where(codes[:, 1] == 1, 0.8, 0.0) + 0.08 * np.where(
        codes[:, 2] < 20, codes[:, 2], 10
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-(logit - 1)))).astype(np.float64)
    return codes, y


def _xgboost_trees(codes: np.ndarray, y: np.ndarray, p: TreeParams) -> list[dict[str, object]]:
    params = xgboost_params(p, max_bin=64, base_score=float(y.mean()))
    booster = xgb.train(params, xgboost_matrix(xgboost_inputs(codes, LAYOUT), LAYOUT, y), p.n_trees)
    trees: list[dict[str, object]] = json.loads(booster.save_raw("json"))["learner"][
        "gradient_booster"
    ]["model"]["trees"]
    return trees


def _right_sets(t: dict[str, object]) -> dict[int, set[int]]:
    """XGBoost's categorical nodes: the categories each sends right."""
    nodes, segments = t["categories_nodes"], t["categories_segments"]
    sizes, cats = t["categories_sizes"], t["categories"]
    return {
        int(n): {int(c) for c in cats[s : s + k]}  # type: ignore[index]
        for n, s, k in zip(nodes, segments, sizes, strict=True)  # type: ignore[call-overload]
    }


@pytest.mark.parametrize(
    "extra", [{}, {"min_child_weight": 5.0, "reg_lambda": 3.0}], ids=["plain", "regularised"]
)
def test_engine_grows_xgboosts_categorical_trees_on_the_same_bins(
    extra: dict[str, float],
) -> None:
    codes, y = _data()
    p = TreeParams(n_trees=6, max_depth=4, learning_rate=0.3, **extra)
    ours = train(codes, y, LAYOUT, p)
    theirs = _xgboost_trees(codes, y, p)
    kinds = set()
    for i, (t, x_t) in enumerate(zip(ours.trees, theirs, strict=True)):
        assert np.array_equal(t.left, x_t["left_children"]), f"tree {i}"
        internal = t.feature >= 0
        split_on = np.array(x_t["split_indices"])
        assert np.array_equal(t.feature[internal], split_on[internal]), f"tree {i}"
        assert np.array_equal(
            t.default_left[internal], np.array(x_t["default_left"], bool)[internal]
        )
        right = _right_sets(x_t)
        for node in np.flatnonzero(internal & (t.feature < 2)):
            assert t.threshold[node] == CATEGORY_SPLIT
            k = LAYOUT.ordered_bins(int(t.feature[node]))
            ours_right = set(np.flatnonzero(~t.category_left[node, :k]).tolist())
            assert ours_right == right[int(node)], f"tree {i} node {node}"
            kinds.add("partition" if t.feature[node] == 0 else "onehot")
        leaf = ~internal
        np.testing.assert_allclose(
            t.value[leaf], np.array(x_t["split_conditions"])[leaf], atol=1e-6
        )
    assert kinds == {"partition", "onehot"}
    # The category never seen in training is in no set: it goes left, as XGBoost sends it.
    unseen = codes[:50].copy()
    unseen[:, 0] = 13
    booster_pd = xgb.train(
        xgboost_params(p, max_bin=64, base_score=float(y.mean())),
        xgboost_matrix(xgboost_inputs(codes, LAYOUT), LAYOUT, y),
        p.n_trees,
    ).predict(xgboost_matrix(xgboost_inputs(unseen, LAYOUT), LAYOUT))
    np.testing.assert_allclose(ours.predict_pd(unseen), booster_pd, atol=1e-6)


def test_a_set_split_finds_scattered_categories_that_an_order_of_codes_cannot() -> None:
    codes, y = _data(seed=1, n=20000)
    stump = TreeParams(n_trees=1, max_depth=1, learning_rate=1.0)
    sets = train(codes[:, :1], y, BinLayout((15,), (14,), (0,), (True,)), stump).trees[0]
    ordered = train(codes[:, :1], y, BinLayout((15,), (14,)), stump).trees[0]
    assert sets.threshold[0] == CATEGORY_SPLIT and ordered.threshold[0] >= 0
    # One side holds the categories of lowest risk, however their codes are spread.
    right = set(np.flatnonzero(~sets.category_left[0, :13]).tolist())
    by_risk = np.argsort(RISK[:13]).tolist()
    side = right if by_risk[0] in right else set(range(13)) - right
    assert side == set(by_risk[: len(side)]) and 3 <= len(side) <= 10
    assert any(b - a > 1 for a, b in zip(sorted(side), sorted(side)[1:], strict=False))
    assert sets.cover[1:].min() > 0
    # The set stump's gain is the larger: it separates what codes in order interleave.
    gain = {}
    for name, t in (("sets", sets), ("ordered", ordered)):
        g = np.array([t.value[1], t.value[2]])
        gain[name] = float(np.sum(t.cover[1:] * g**2))
    assert gain["sets"] > 1.5 * gain["ordered"]


def _ensemble() -> tuple[TreeEnsemble, np.ndarray]:
    codes, y = _data(seed=2)
    ens = train(codes, y, LAYOUT, TreeParams(n_trees=12, max_depth=5))
    assert sum(int(np.sum(t.threshold == CATEGORY_SPLIT)) for t in ens.trees) > 12
    return ens, codes


def test_reference_shapley_is_exact_for_set_splits() -> None:
    ens, codes = _ensemble()
    ref = codes[0]
    rows = codes[1:120]
    values = ReferenceShapley(ens, ref)(rows)
    np.testing.assert_allclose(
        values.sum(axis=1), ens.margin(rows) - ens.margin(ref[None, :]), atol=1e-12
    )
    for k in (0, 5, 17, 60):
        np.testing.assert_allclose(values[k], shapley_values(ens, rows[k], ref), atol=1e-12)
    # shap's TreeExplainer on the threshold form (a rank column per tree and categorical
    # feature, added up per feature) gives the same values.
    explainer = shap.TreeExplainer(
        ens.shap_model(), data=ens.shap_inputs(ref[None, :]), feature_perturbation="interventional"
    )
    theirs = ens.shap_by_feature(explainer.shap_values(ens.shap_inputs(rows)))
    np.testing.assert_allclose(values, theirs, atol=1e-6)
    # Batches are cut into chunks: any batch gives each row the values it gets alone.
    np.testing.assert_allclose(ReferenceShapley(ens, ref)(rows[7:8]), values[7:8], atol=1e-15)


def test_set_splits_survive_storage_and_the_level_messages() -> None:
    ens, codes = _ensemble()
    again = TreeEnsemble.from_arrays(ens.to_arrays())
    assert again.digest() == ens.digest()
    np.testing.assert_array_equal(again.margin(codes), ens.margin(codes))
    tree = ens.trees[0]
    back, build = tree_of(tree_record(tree, np.array([0])))
    assert back.digest() == tree.digest() and build is not None
    record = tree_record(tree)
    record[protocol.TREE_CATEGORIES] = Array(np.zeros((tree.n_nodes + 1, 3), dtype=bool))
    with pytest.raises(protocol.ProtocolError, match="category sets"):
        tree_of(record)
    # An ensemble stored before set splits existed (no category_left) still loads.
    old = {k: v for k, v in ens.to_arrays().items() if k != "category_left"}
    old["threshold"] = np.where(old["threshold"] == CATEGORY_SPLIT, 0, old["threshold"])
    assert TreeEnsemble.from_arrays(old).category_width == 0
    # A set split without its set is refused.
    broken = dict(old)
    broken["threshold"] = ens.to_arrays()["threshold"]
    with pytest.raises(ValueError, match="set of categories"):
        TreeEnsemble.from_arrays(broken)
