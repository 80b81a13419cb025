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

A set of categories is intervals too, on a column of its own per (tree, feature): the
category's rank in an order chosen for that tree (`category_order`), so each set is one or
few runs of ranks. The order sorts categories by the sides they take at the tree's set
splits on the feature, top down; a category that cannot reach a node (an ancestor sent it
the other way) is free to join either neighbouring run there. Shapley values are linear in
the trees, and a column no tree but its own reads is a null player elsewhere, so the values
of a feature's columns add up to the feature's own value: exact, as for one column.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from jointcredit.models.trees.tree import CATEGORY_SPLIT, LEAF, SPECIAL_BITS, Tree


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


def set_runs(sides: list[bool | None]) -> list[tuple[float, bool]]:
    """Ranks' sides (True: left; None: free) as (upper bound, goes left) runs, ascending,
    each free rank joining the run before it (the first run, at the start)."""
    known = [side for side in sides if side is not None]
    if not known:
        return [(np.inf, False)]
    runs: list[tuple[float, bool]] = []
    current = known[0]
    for rank, side in enumerate(sides):
        if side is not None and side != current:
            runs.append((rank - 0.5, current))
            current = side
    runs.append((np.inf, current))
    return runs


def category_reach(t: Tree, feature: int, n_codes: int) -> np.ndarray:
    """(nodes, width): the codes of `feature` below `n_codes` that can reach each node (the
    sets of its ancestors' splits on the feature let them through)."""
    width = t.category_left.shape[1]
    reach = np.zeros((t.n_nodes, width), dtype=bool)
    reach[0, :n_codes] = True
    for node in range(t.n_nodes):  # parents before children
        if t.feature[node] == LEAF:
            continue
        by_set = t.feature[node] == feature and t.threshold[node] == CATEGORY_SPLIT
        to_left = t.category_left[node] if by_set else np.ones(width, dtype=bool)
        to_right = ~t.category_left[node] if by_set else np.ones(width, dtype=bool)
        reach[t.left[node]] = reach[node] & to_left
        reach[t.right[node]] = reach[node] & to_right
    return reach


def category_order(t: Tree, feature: int, n_codes: int) -> np.ndarray:
    """Each code's rank in `t`'s column for `feature`: codes sorted by their sides at the
    tree's set splits on it, in node order (0 left, 1 right, 1/2 where the code cannot
    reach the node), ties by code."""
    reach = category_reach(t, feature, n_codes)
    nodes = np.flatnonzero((t.feature == feature) & (t.threshold == CATEGORY_SPLIT))
    width = t.category_left.shape[1]
    keys = [np.where(reach[n], np.where(t.category_left[n], 0.0, 1.0), 0.5) for n in nodes]
    order = np.lexsort((np.arange(width), *reversed(keys)))
    rank = np.empty(width, dtype=np.int64)
    rank[order] = np.arange(width)
    return rank


@dataclass(frozen=True)
class ShapColumns:
    """The input columns TreeSHAP reads: the features' own codes, then one rank column per
    (tree, categorical feature) split by sets in that tree (`tree`, `feature`, `rank` per
    code)."""

    n_features: int
    tree: tuple[int, ...]
    feature: tuple[int, ...]
    rank: tuple[np.ndarray, ...]

    @property
    def of_feature(self) -> np.ndarray:
        """Each column's feature."""
        return np.concatenate([np.arange(self.n_features), np.array(self.feature, dtype=int)])

    def column(self, tree: int, feature: int) -> int:
        for i, (t, f) in enumerate(zip(self.tree, self.feature, strict=True)):
            if (t, f) == (tree, feature):
                return self.n_features + i
        return feature

    def inputs(self, codes: np.ndarray, missing: tuple[int, ...]) -> np.ndarray:
        """(rows, columns): codes as floats, missing as NaN, categories as their ranks."""
        x = codes.astype(np.float64)
        for j, m in enumerate(missing):
            if m >= 0:
                x[codes[:, j] == m, j] = np.nan
        extra = np.empty((len(codes), len(self.tree)))
        for i, (f, rank) in enumerate(zip(self.feature, self.rank, strict=True)):
            code = codes[:, f]
            absent = code == missing[f]
            extra[:, i] = np.where(absent, np.nan, rank[np.clip(code, 0, len(rank) - 1)])
        return np.concatenate([x, extra], axis=1)


def shap_columns(trees: tuple[Tree, ...], missing: tuple[int, ...]) -> ShapColumns:
    tree_ids, features, ranks = [], [], []
    for i, t in enumerate(trees):
        by_set = (t.feature != LEAF) & (t.threshold == CATEGORY_SPLIT)
        for f in np.unique(t.feature[by_set]).tolist():
            n_codes = missing[f] if missing[f] >= 0 else t.category_left.shape[1]
            tree_ids.append(i)
            features.append(f)
            ranks.append(category_order(t, f, n_codes))
    return ShapColumns(len(missing), tuple(tree_ids), tuple(features), tuple(ranks))


def threshold_form(
    t: Tree, missing: tuple[int, ...], columns: ShapColumns | None = None, index: int = 0
) -> dict[str, np.ndarray]:
    """`t` (tree `index` of the ensemble whose TreeSHAP columns are `columns`) as
    threshold-only arrays (shap's custom tree keys but `values`/covers, which the caller
    derives from `leaf_value` and `leaf_cover`: both 0 at internal nodes)."""
    out = _Out()
    by_set = (t.feature != LEAF) & (t.threshold == CATEGORY_SPLIT)
    reach = {
        f: category_reach(t, f, missing[f] if missing[f] >= 0 else t.category_left.shape[1])
        for f in np.unique(t.feature[by_set]).tolist()
    }

    def node_runs(node: int, f: int) -> tuple[int, list[tuple[float, bool]]]:
        if t.threshold[node] != CATEGORY_SPLIT:
            runs = intervals(int(t.threshold[node]), int(t.special_left[node]), missing[f])
            return f, runs
        if columns is None:
            raise ValueError("a set split needs the ensemble's TreeSHAP columns")
        col = columns.column(index, f)
        rank = columns.rank[col - columns.n_features]
        order = np.argsort(rank)
        sides = [bool(t.category_left[node, c]) if reach[f][node, c] else None for c in order]
        return col, set_runs(sides)

    def emit(node: int) -> int:
        f = int(t.feature[node])
        if f == LEAF:
            return out.new(-2, 0.0, float(t.value[node]), float(t.cover[node]))
        col, runs = node_runs(node, f)
        missing_left = bool(t.default_left[node])
        if len(runs) == 1:
            # Every value that can reach the node goes one way: a split on missing alone.
            side = runs[0][1]
            if side == missing_left:
                return emit(int(t.left[node] if side else t.right[node]))
            runs = [(np.inf, side), (np.inf, not side)]
        first = chain = out.new(col, runs[0][0])
        for i, (_, side) in enumerate(runs[:-1]):
            out.left[chain] = emit(int(t.left[node] if side else t.right[node]))
            if i == len(runs) - 2:  # the last run: the other side
                out.right[chain] = emit(int(t.left[node] if runs[-1][1] else t.right[node]))
            else:
                out.right[chain] = out.new(col, runs[i + 1][0])
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
