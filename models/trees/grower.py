"""Growing one tree level by level from histograms, wherever the histograms come from.

The same grower runs the central engine (histograms of the pooled rows) and the federated
coordinator (the sum of the institutions' histograms), which is what makes the federated
ensemble equal the central one: both make the same decisions from the same sums.

Per level: `request()` names the nodes whose histograms are needed; `receive()` takes them,
derives each sibling as parent - built (histogram subtraction: only the child with the smaller
hessian sum is built), picks every node's split at once and lays out the next level. Nodes
that cannot split (at `max_depth`, or too light for two children of `min_child_weight`) are
never asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jointcredit.models.trees.params import BinLayout, TreeParams
from jointcredit.models.trees.split import LevelSplits, best_splits, leaf_weight
from jointcredit.models.trees.tree import LEAF, Tree

# XGBoost's kRtEps: a split must reduce the loss by more than this.
MIN_GAIN = 1e-6


@dataclass(frozen=True)
class LevelRequest:
    """Build the histograms of `build` (node ids of `tree`, the tree grown so far)."""

    level: int
    build: np.ndarray
    tree: Tree


class TreeGrower:
    def __init__(self, layout: BinLayout, params: TreeParams) -> None:
        if params.monotone and len(params.monotone) != layout.n_features:
            raise ValueError("one monotone constraint per feature")
        self.layout, self.params = layout, params
        self._feature: list[int] = [LEAF]
        self._threshold: list[int] = [0]
        self._default_left: list[bool] = [False]
        self._special_left: list[int] = [0]
        self._no_categories = np.zeros(layout.category_width, dtype=bool)
        self._category_left: list[np.ndarray] = [self._no_categories]
        self._left: list[int] = [LEAF]
        self._right: list[int] = [LEAF]
        self._value: list[float] = [0.0]
        self._sums: list[np.ndarray] = [np.zeros(2)]
        self._lower: list[float] = [-np.inf]
        self._upper: list[float] = [np.inf]
        self._depth: list[int] = [0]
        self.level = 0
        self._build = np.array([0])  # the root: its sums come from its histogram
        self._frontier = [0]
        self._parent_hist: dict[int, np.ndarray] = {}
        self._present: np.ndarray | None = None  # bins with training rows: the root's
        self.done = params.max_depth == 0

    def request(self) -> LevelRequest | None:
        if self.done:
            return None
        return LevelRequest(self.level, self._build.copy(), self.tree())

    def receive(self, built: np.ndarray) -> None:
        """The histograms of the requested nodes, (len(build), total_bins, 2), in order."""
        if self.done:
            raise RuntimeError("the tree is finished")
        expected = (len(self._build), self.layout.total_bins, 2)
        if built.shape != expected:
            raise ValueError(f"histograms of shape {built.shape}, expected {expected}")
        hists = dict(zip(self._build.tolist(), built, strict=True))
        if self.level == 0:
            # Every row has one code per feature: any feature's bins sum to the node's total.
            root = built[0, : self.layout.n_bins[0], :].sum(axis=0)
            self._present = built[0, :, 1] > 0
            self._sums[0] = root
            self._value[0] = self._weight(0, root) * self.params.learning_rate
        nodes = [n for n in self._frontier if self._splittable(n)]
        for node in nodes:
            if node not in hists:
                parent = self._parent_of(node)
                sibling = self._sibling(node, parent)
                hists[node] = self._parent_hist[parent] - hists[sibling]
        self._parent_hist = {}
        next_frontier: list[int] = []
        build: list[int] = []
        if nodes:
            splits = best_splits(
                np.stack([hists[n] for n in nodes]),
                np.stack([self._sums[n] for n in nodes]),
                np.array([self._lower[n] for n in nodes]),
                np.array([self._upper[n] for n in nodes]),
                self.layout,
                self.params,
                self._present,
            )
            for i, node in enumerate(nodes):
                gain = splits.gain[i]
                if not (gain > MIN_GAIN and gain >= self.params.gamma):
                    continue
                left, right = self._split(node, splits, i)
                next_frontier += [left, right]
                if self._splittable(left) or self._splittable(right):
                    smaller = left if self._sums[left][1] <= self._sums[right][1] else right
                    build.append(smaller)
                    self._parent_hist[node] = hists[node]
        self._frontier = next_frontier
        self._build = np.array(build, dtype=np.int64)
        self.level += 1
        self.done = len(build) == 0

    def tree(self) -> Tree:
        feature = np.array(self._feature, dtype=np.int32)
        return Tree(
            feature=feature,
            threshold=np.array(self._threshold, dtype=np.int32),
            default_left=np.array(self._default_left, dtype=bool),
            special_left=np.array(self._special_left, dtype=np.int64),
            category_left=np.stack(self._category_left),
            left=np.array(self._left, dtype=np.int32),
            right=np.array(self._right, dtype=np.int32),
            value=np.where(feature == LEAF, np.array(self._value), 0.0),
            cover=np.array([s[1] for s in self._sums], dtype=np.float64),
        )

    # -- internals
    def _weight(self, node: int, sums: np.ndarray) -> float:
        lo, hi = np.array(self._lower[node]), np.array(self._upper[node])
        return float(leaf_weight(sums[0], sums[1], self.params.reg_lambda, lo, hi))

    def _splittable(self, node: int) -> bool:
        h = self._sums[node][1]
        return bool(
            self._depth[node] < self.params.max_depth
            and h > 0
            and h >= 2 * self.params.min_child_weight
        )

    def _parent_of(self, node: int) -> int:
        return next(p for p in self._parent_hist if node in (self._left[p], self._right[p]))

    def _sibling(self, node: int, parent: int) -> int:
        return self._right[parent] if self._left[parent] == node else self._left[parent]

    def _split(self, node: int, splits: LevelSplits, i: int) -> tuple[int, int]:
        f = int(splits.feature[i])
        self._feature[node] = f
        self._threshold[node] = int(splits.threshold[i])
        self._default_left[node] = bool(splits.default_left[i])
        self._special_left[node] = int(splits.special_left[i])
        self._category_left[node] = splits.category_left[i].copy()
        eta = self.params.learning_rate
        children = []
        weights = []
        for sums in (splits.left[i], splits.right[i]):
            child = len(self._feature)
            w = self._weight(node, sums)  # the parent's bounds, as XGBoost
            weights.append(w)
            self._feature.append(LEAF)
            self._threshold.append(0)
            self._default_left.append(False)
            self._special_left.append(0)
            self._category_left.append(self._no_categories)
            self._left.append(LEAF)
            self._right.append(LEAF)
            self._value.append(w * eta)
            self._sums.append(np.array(sums, dtype=np.float64))
            self._lower.append(self._lower[node])
            self._upper.append(self._upper[node])
            self._depth.append(self._depth[node] + 1)
            children.append(child)
        left, right = children
        self._left[node], self._right[node] = left, right
        c = self.params.constraint(f)
        mid = (weights[0] + weights[1]) / 2
        if c > 0:
            self._upper[left], self._lower[right] = mid, mid
        elif c < 0:
            self._lower[left], self._upper[right] = mid, mid
        return left, right
