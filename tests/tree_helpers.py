"""Bin codes for the tree tests: pooled quantiles, a stand-in for the federated binning
(`jointcredit.models.binning`), plus XGBoost's view of the same codes."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from jointcredit.models.trees import BinLayout, TreeEnsemble
from jointcredit.simulations.tree_baselines import xgboost_inputs


def quantile_codes(x: np.ndarray, max_bins: int) -> tuple[np.ndarray, BinLayout]:
    """(rows, features) floats with NaN -> codes 0..k-1 by pooled quantile edges, the
    missing code last (every feature gets one)."""
    codes = np.zeros(x.shape, dtype=np.int64)
    n_bins, missing = [], []
    for j in range(x.shape[1]):
        col = x[:, j]
        present = ~np.isnan(col)
        edges = np.unique(np.quantile(col[present], np.linspace(0, 1, max_bins + 1)[1:-1]))
        k = len(edges) + 1
        codes[present, j] = np.searchsorted(edges, col[present], side="left")
        codes[~present, j] = k
        n_bins.append(k + 1)
        missing.append(k)
    return codes, BinLayout(tuple(n_bins), tuple(missing))


def xgb_inputs(codes: np.ndarray, layout: BinLayout) -> np.ndarray:
    """The codes as the centralized XGBoost baseline feeds them."""
    return xgboost_inputs(codes, layout)


def xgb_trees(booster: Any) -> list[dict[str, np.ndarray]]:
    """XGBoost's trees as (feature, threshold on codes, default_left, left, right, leaf
    value) arrays, node ids as XGBoost numbers them."""
    import json

    model = json.loads(booster.save_raw("json"))
    out = []
    for t in model["learner"]["gradient_booster"]["model"]["trees"]:
        left = np.array(t["left_children"])
        leaf = left == -1
        cond = np.array(t["split_conditions"], dtype=np.float64)
        out.append(
            {
                "feature": np.where(leaf, -1, t["split_indices"]),
                # x < cond goes left: on integer codes, codes <= ceil(cond) - 1.
                "threshold": np.where(leaf, 0, np.ceil(cond) - 1).astype(np.int64),
                "default_left": np.array(t["default_left"], dtype=bool) & ~leaf,
                "left": left,
                "right": np.array(t["right_children"]),
                "value": np.where(leaf, cond, 0.0),
                "cover": np.array(t["sum_hessian"], dtype=np.float64),
            }
        )
    return out


def shapley_values(ensemble: TreeEnsemble, x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Exact Shapley values of v(S) = margin(x on S, ref elsewhere), every coalition
    enumerated (2^features margins): independent of TreeSHAP's algorithm."""
    p = len(x)
    subsets = np.arange(2**p)
    on = (subsets[:, None] >> np.arange(p)) & 1 == 1
    v = ensemble.margin(np.where(on, x, ref))
    size = on.sum(axis=1)
    weight = np.array([math.factorial(s) * math.factorial(p - s - 1) / math.factorial(p)
                       for s in range(p)])  # fmt: skip
    phi = np.zeros(p)
    for j in range(p):
        without = subsets[~on[:, j]]
        phi[j] = np.sum(weight[size[without]] * (v[without | (1 << j)] - v[without]))
    return phi
