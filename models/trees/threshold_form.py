"""A tree whose nodes send special values' bins to learned sides, rewritten with threshold
splits only (what `shap.TreeExplainer`'s custom trees take: "value < threshold", NaN to a
default child).

A node on feature f with regular threshold t and special bins sent left is a set of code
intervals per side: codes <= t left, each special code whose bit is set left, the codes
between them right. It becomes a chain of threshold nodes on f, one per boundary between
intervals of different sides, each leading to a copy of the subtree of its interval's side;
missing values follow the default child toward the node's missing side. The rewritten tree
computes the same function of the codes, so interventional TreeSHAP (a Shapley value of that
function) is unchanged. A cover is recomputed as the sum of its children's, which keeps
every node's value the cover-weighted mean of its children's, as path-dependent TreeSHAP
expects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from jointcredit.models.trees.tree import LEAF, SPECIAL_BITS, Tree


@dataclass
class _Out:
    left: list[int] = field(default_factory=list)
    right: list[int] = field(default_factory=list)
    default: list[int] = field(default_factory=list)
    feature: list[int] = field(default_factory=list)
    threshold: list[float] = field(default_factory=list)
    leaf_value: list[float] = field(default_factory=list)
    leaf_cover: list[float] = field(default_factory=list)

    def new(self, feature: int, threshold: float, value: float = 0.0, cover: float = 0.0) -> int:
        self.left.append(-1)
        self.right.append(-1)
        self.default.append(-1)
        self.feature.append(feature)
        self.threshold.append(threshold)
        self.leaf_value.append(value)
        self.leaf_cover.append(cover)
        return len(self.feature) - 1


def intervals(threshold: int, special_left: int, missing: int) -> list[tuple[float, bool]]:
    """The codes below the missing one as (upper bound, goes left) runs, ascending: each run
    holds the codes below its bound and at or above the previous run's."""
    left_codes = sorted(missing - 1 - b for b in range(SPECIAL_BITS + 1) if (special_left >> b) & 1)
    runs: list[tuple[float, bool]] = [(threshold + 0.5, True)] if threshold >= 0 else []
    for c in left_codes:
        runs += [(c - 0.5, False), (c + 0.5, True)]
    runs.append((np.inf, False))
    merged: list[tuple[float, bool]] = []
    for bound, side in runs:
        if merged and merged[-1][0] >= bound:
            continue  # an empty run (the special code right after the threshold)
        if merged and merged[-1][1] == side:
            merged[-1] = (bound, side)
        else:
            merged.append((bound, side))
    return merged


def threshold_form(t: Tree, missing: tuple[int, ...]) -> dict[str, np.ndarray]:
    """`t` as threshold-only arrays (shap's custom tree keys but `values`/covers, which the
    caller derives from `leaf_value` and `leaf_cover`: both 0 at internal nodes)."""
    out = _Out()

    def emit(node: int) -> int:
        f = int(t.feature[node])
        if f == LEAF:
            return out.new(-2, 0.0, float(t.value[node]), float(t.cover[node]))
        runs = intervals(int(t.threshold[node]), int(t.special_left[node]), missing[f])
        missing_left = bool(t.default_left[node])
        first = chain = out.new(f, runs[0][0])
        for i, (_, side) in enumerate(runs[:-1]):
            out.left[chain] = emit(int(t.left[node] if side else t.right[node]))
            if i == len(runs) - 2:  # the last run: the other side
                out.right[chain] = emit(int(t.left[node] if runs[-1][1] else t.right[node]))
            else:
                out.right[chain] = out.new(f, runs[i + 1][0])
            # Missing values: to this run's side if it is theirs, else on down the chain,
            # whose runs alternate sides, so the last node has theirs.
            out.default[chain] = out.left[chain] if side == missing_left else out.right[chain]
            chain = out.right[chain]
        return first

    emit(0)
    return {
        "children_left": np.array(out.left, dtype=np.int64),
        "children_right": np.array(out.right, dtype=np.int64),
        "children_default": np.array(out.default, dtype=np.int64),
        "features": np.array(out.feature, dtype=np.int64),
        "thresholds": np.array(out.threshold, dtype=np.float64),
        "leaf_value": np.array(out.leaf_value, dtype=np.float64),
        "leaf_cover": np.array(out.leaf_cover, dtype=np.float64),
    }
