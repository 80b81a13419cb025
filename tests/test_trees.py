"""The tree engine: equal to XGBoost's `hist` trees on the same bins, monotone constraints on
every path, missing values routed as learned, histogram subtraction, storage."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb
from tree_helpers import quantile_codes, xgb_inputs, xgb_trees

from jointcredit.models.trees import BinLayout, TreeEnsemble, TreeParams, histogram, train
from jointcredit.models.trees.boost import gradients
from jointcredit.simulations.tree_baselines import xgboost_params


def _data(seed: int = 1, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    x[:, 2] = np.exp(2 * x[:, 2])  # heavy tail
    x[rng.random(n) < 0.15, 1] = np.nan
    x[rng.random(n) < 0.05, 3] = np.nan
    logit = (
        0.8 * x[:, 0]
        - 0.5 * np.nan_to_num(x[:, 1], nan=2.0)
        + 0.3 * np.log(x[:, 2])
        + 0.5 * x[:, 4] ** 2
        - 1
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float64)
    return x, y


def _xgboost(codes: np.ndarray, layout: BinLayout, y: np.ndarray, p: TreeParams) -> xgb.Booster:
    params = xgboost_params(p, max_bin=256, base_score=float(y.mean()))
    data = xgb.DMatrix(xgb_inputs(codes, layout), label=y, missing=np.nan)
    return xgb.train(params, data, p.n_trees)


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"monotone": (1, -1, 1, 0, 0)},
        {"gamma": 5.0, "min_child_weight": 3.0, "reg_lambda": 2.0},
    ],
    ids=["plain", "monotone", "regularised"],
)
def test_engine_grows_xgboosts_trees_on_the_same_bins(extra: dict[str, object]) -> None:
    x, y = _data()
    codes, layout = quantile_codes(x, 32)
    p = TreeParams(n_trees=8, max_depth=4, learning_rate=0.3, **extra)
    ours = train(codes, y, layout, p)
    theirs = xgb_trees(_xgboost(codes, layout, y, p))
    ordered = np.array([layout.ordered_bins(j) for j in range(layout.n_features)])
    assert len(theirs) == len(ours.trees)
    for i, (t, x_t) in enumerate(zip(ours.trees, theirs, strict=True)):
        assert np.array_equal(t.feature, x_t["feature"]), f"tree {i}: split features differ"
        assert np.array_equal(t.left, x_t["left"]) and np.array_equal(t.right, x_t["right"])
        internal = t.feature >= 0
        # XGBoost writes 'every ordered code left' with a cut above the largest code.
        their_threshold = np.minimum(x_t["threshold"], ordered[np.maximum(t.feature, 0)] - 1)
        assert np.array_equal(t.threshold[internal], their_threshold[internal]), f"tree {i}"
        assert np.array_equal(t.default_left, x_t["default_left"]), f"tree {i}"
        # XGBoost keeps weights in float32: agreement to its precision.
        np.testing.assert_allclose(t.value, x_t["value"], atol=1e-6)
        np.testing.assert_allclose(t.cover, x_t["cover"], rtol=1e-6)
    assert any(t.n_nodes > 1 for t in ours.trees)


def test_monotone_constraints_hold_on_every_path() -> None:
    x, y = _data(seed=3)
    # Feature 0 raises risk and feature 1 lowers it; the constraints point against feature
    # 4's U shape, so they bind.
    codes, layout = quantile_codes(x, 24)
    monotone = (1, -1, 0, 0, -1)
    ens = train(codes, y, layout, TreeParams(n_trees=20, max_depth=5, monotone=monotone))
    rng = np.random.default_rng(0)
    base = codes[rng.choice(len(codes), 200, replace=False)]
    for j, direction in enumerate(monotone):
        if direction == 0:
            continue
        k = layout.ordered_bins(j)
        sweep = np.repeat(base[None], k, axis=0)
        sweep[:, :, j] = np.arange(k)[:, None]
        margins = ens.margin(sweep.reshape(-1, layout.n_features)).reshape(k, -1)
        steps = np.diff(margins, axis=0) * direction
        assert steps.min() >= -1e-12, f"feature {j} not monotone"
    # Without the constraint the U-shaped feature is not monotone: the test can fail.
    free = train(codes, y, layout, TreeParams(n_trees=20, max_depth=5))
    k = layout.ordered_bins(4)
    sweep = np.repeat(base[None], k, axis=0)
    sweep[:, :, 4] = np.arange(k)[:, None]
    steps = np.diff(free.margin(sweep.reshape(-1, 5)).reshape(k, -1), axis=0)
    assert steps.max() > 0 and steps.min() < 0


def test_missing_values_go_where_the_split_learned() -> None:
    rng = np.random.default_rng(5)
    n = 4000
    x = rng.normal(size=(n, 2))
    missing = rng.random(n) < 0.2
    x[missing, 0] = np.nan
    # Missing is the riskiest value, low values the safest: the default must go right
    # (with the high codes) when the split is low-vs-high, learned, not assumed.
    risk = np.where(missing, 2.0, np.nan_to_num(x[:, 0]))
    y = (rng.random(n) < 1 / (1 + np.exp(-2 * risk))).astype(np.float64)
    codes, layout = quantile_codes(x, 16)
    ens = train(codes, y, layout, TreeParams(n_trees=1, max_depth=1, learning_rate=1.0))
    (tree,) = ens.trees
    assert tree.feature[0] == 0
    margins = ens.margin(codes)
    high = codes[:, 0] > tree.threshold[0]
    goes_left = bool(tree.default_left[0])
    assert not goes_left  # the risky side here is the right one
    assert np.allclose(margins[missing], margins[high & ~missing][0])
    # Mirror the data: missing now sits with the low codes, so the learned default flips.
    x2 = x.copy()
    x2[:, 0] = -x2[:, 0]
    codes2, layout2 = quantile_codes(x2, 16)
    (tree2,) = train(codes2, y, layout2, TreeParams(n_trees=1, max_depth=1)).trees
    assert tree2.feature[0] == 0 and bool(tree2.default_left[0])


def test_histogram_subtraction_equals_building_the_sibling() -> None:
    x, y = _data(seed=7, n=500)
    codes, layout = quantile_codes(x, 16)
    grad, hess = gradients(np.zeros(len(y)), y)
    bins = histogram.flat_bins(codes, layout)
    left = codes[:, 0] <= 7
    slot = np.where(left, 0, 1)
    parent = histogram.build(
        bins, grad, hess, np.zeros(len(y), dtype=np.int64), 1, layout.total_bins
    )
    children = histogram.build(bins, grad, hess, slot, 2, layout.total_bins)
    np.testing.assert_allclose(parent[0] - children[0], children[1], atol=1e-12)
    # Each feature's bins hold every row once.
    for j, off in enumerate(layout.offsets):
        total = parent[0, off : off + layout.n_bins[j]].sum(axis=0)
        np.testing.assert_allclose(total, [grad.sum(), hess.sum()])


def test_ensemble_round_trips_through_arrays_and_scores_tree_by_tree() -> None:
    x, y = _data(seed=2, n=800)
    codes, layout = quantile_codes(x, 16)
    ens = train(codes, y, layout, TreeParams(n_trees=5, max_depth=3))
    again = TreeEnsemble.from_arrays(ens.to_arrays())
    assert again.digest() == ens.digest()
    by_tree = ens.base_margin + sum(t.predict(codes, np.asarray(layout.missing)) for t in ens.trees)
    np.testing.assert_allclose(again.margin(codes), by_tree, rtol=0, atol=1e-12)
    broken = ens.to_arrays()
    broken["left"] = broken["left"].copy()
    broken["left"][0] = 0  # the root its own child
    with pytest.raises(ValueError, match="children"):
        TreeEnsemble.from_arrays(broken)


def test_training_continues_from_a_starting_ensemble() -> None:
    x, y = _data(seed=4, n=1000)
    codes, layout = quantile_codes(x, 16)
    p = TreeParams(n_trees=3, max_depth=3)
    first = train(codes, y, layout, p)
    both = train(codes, y, layout, p, start=first)
    whole = train(codes, y, layout, TreeParams(n_trees=6, max_depth=3))
    assert len(both.trees) == len(whole.trees) == 6
    for a, b in zip(both.trees, whole.trees, strict=True):
        assert np.array_equal(a.feature, b.feature) and np.array_equal(a.threshold, b.threshold)
        np.testing.assert_allclose(a.value, b.value, rtol=0, atol=1e-12)


def test_level_by_level_routing_equals_routing_from_the_root() -> None:
    from jointcredit.models.trees.boost import Routing

    x, y = _data(seed=8, n=600)
    codes, layout = quantile_codes(x, 16)
    missing = np.asarray(layout.missing)
    first, second = train(codes, y, layout, TreeParams(n_trees=2, max_depth=4)).trees
    routing = Routing()
    # the first tree as it grew: every prefix of its levels, each extending the last
    depth = np.zeros(first.n_nodes, dtype=np.int64)
    for n in range(first.n_nodes):
        if first.feature[n] >= 0:
            depth[first.left[n]] = depth[first.right[n]] = depth[n] + 1
    for level in range(first.depth + 1):
        keep = depth < level
        grown = type(first)(
            feature=np.where(keep, first.feature, -1),
            threshold=first.threshold,
            default_left=first.default_left,
            left=np.where(keep, first.left, -1),
            right=np.where(keep, first.right, -1),
            value=first.value,
            cover=first.cover,
            special_left=first.special_left,
            category_left=first.category_left,
        )
        assert np.array_equal(routing.nodes(grown, codes, missing), grown.route(codes, missing))
    # A stage several levels back (another process saw this node's earlier levels): the
    # rows go on down from there, as many levels as the tree grew since.
    skipping = Routing()
    stump = type(first)(
        feature=np.where(depth < 1, first.feature, -1),
        threshold=first.threshold,
        default_left=first.default_left,
        left=np.where(depth < 1, first.left, -1),
        right=np.where(depth < 1, first.right, -1),
        value=first.value,
        cover=first.cover,
        special_left=first.special_left,
        category_left=first.category_left,
    )
    skipping.nodes(stump, codes, missing)
    assert first.depth >= 3
    assert np.array_equal(skipping.nodes(first, codes, missing), first.route(codes, missing))
    # another tree does not extend it: routed from the root, not from stale positions
    assert not second.extends(first) or np.array_equal(first.feature, second.feature)
    assert np.array_equal(routing.nodes(second, codes, missing), second.route(codes, missing))


def test_special_values_get_their_own_bins_and_are_split_off_as_learned() -> None:
    """Codes as the federated binning lays them out: regular bins 0..k-1, then one bin per
    special value (e.g. 96/98 'unknown' in a delinquency count), then missing."""
    rng = np.random.default_rng(11)
    n = 5000
    regular = rng.integers(0, 8, n)  # risk rises with the regular value
    kind = rng.random(n)
    codes = np.where(kind < 0.1, 8, np.where(kind < 0.15, 9, regular))  # two special values
    codes = np.where(kind > 0.95, 10, codes)[:, None]  # missing last
    layout = BinLayout((11,), (10,))
    risk = np.select(
        [codes[:, 0] == 8, codes[:, 0] == 9, codes[:, 0] == 10],
        [-2.0, 2.5, 0.0],
        0.4 * (regular - 4),
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-risk))).astype(np.float64)
    ens = train(codes, y, layout, TreeParams(n_trees=30, max_depth=3, learning_rate=0.3))
    margin = ens.margin(np.arange(11)[:, None])
    assert margin[9] > margin[:8].max()  # the risky special value, above every regular one
    assert margin[8] < margin[:8].min()  # the safe one below every regular one
    assert margin[0] < margin[7]  # and the regular values keep their order
