"""The central engine: boosting on rows held in one place (the lossless reference the federated
run is tested against, and each institution's own trees).

Binary log-loss: gradient p - y and hessian p (1 - p) at the current margin, starting from
`base_margin` (the log-odds of the positive rate, as XGBoost's `base_score`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from jointcredit.models.trees import histogram
from jointcredit.models.trees.ensemble import TreeEnsemble, sigmoid
from jointcredit.models.trees.grower import LevelRequest, TreeGrower
from jointcredit.models.trees.params import BinLayout, TreeParams
from jointcredit.models.trees.tree import Tree

# XGBoost's floor on the logistic hessian.
MIN_HESSIAN = 1e-16


def gradients(margin: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = sigmoid(margin)
    return p - y, np.maximum(p * (1.0 - p), MIN_HESSIAN)


def base_margin(positives: float, rows: float) -> float:
    """Log-odds of the positive rate (clipped away from 0 and 1)."""
    rate = min(max(positives / rows, 1e-6), 1 - 1e-6)
    return float(np.log(rate / (1 - rate)))


@dataclass
class Routing:
    """Where the rows are in the tree being grown: routing level by level costs one step
    down per level instead of a walk from the root."""

    tree: Tree | None = None
    node: np.ndarray | None = None

    def nodes(self, tree: Tree, codes: np.ndarray, missing: np.ndarray) -> np.ndarray:
        if self.tree is not None and self.node is not None and tree.extends(self.tree):
            node = tree.advance(self.node, codes, missing)
        else:
            node = tree.route(codes, missing)
        self.tree, self.node = tree, node
        return node


def level_histograms(
    request: LevelRequest,
    codes: np.ndarray,
    bins: np.ndarray,
    grad: np.ndarray,
    hess: np.ndarray,
    layout: BinLayout,
    routing: Routing | None = None,
) -> np.ndarray:
    """The requested nodes' histograms over these rows (routed through the tree so far;
    from where `routing` left them at the previous level, when given)."""
    missing = np.asarray(layout.missing)
    node = (routing or Routing()).nodes(request.tree, codes, missing)
    slot = np.full(request.tree.n_nodes, histogram.UNUSED, dtype=np.int64)
    slot[request.build] = np.arange(len(request.build))
    return histogram.build(bins, grad, hess, slot[node], len(request.build), layout.total_bins)


def grow_tree(
    layout: BinLayout, params: TreeParams, histograms: Callable[[LevelRequest], np.ndarray]
) -> Tree:
    grower = TreeGrower(layout, params)
    while (request := grower.request()) is not None:
        grower.receive(histograms(request))
    return grower.tree()


def train(
    codes: np.ndarray,
    y: np.ndarray,
    layout: BinLayout,
    params: TreeParams,
    *,
    margin0: float | None = None,
    start: TreeEnsemble | None = None,
) -> TreeEnsemble:
    """`params.n_trees` trees on these rows; after `start`'s trees when given (personalisation
    on top of a global ensemble), else from `margin0` (default: these rows' log-odds)."""
    bins = histogram.flat_bins(codes, layout)
    y = np.asarray(y, dtype=np.float64)
    missing = tuple(layout.missing)
    if start is not None:
        if start.missing != missing:
            raise ValueError("the starting ensemble has another bin layout")
        base, trees = start.base_margin, list(start.trees)
        margin = start.margin(codes)
    else:
        base = base_margin(y.sum(), len(y)) if margin0 is None else margin0
        trees, margin = [], np.full(len(y), base)
    for _ in range(params.n_trees):
        grad, hess = gradients(margin, y)
        routing = Routing()

        def histograms(
            req: LevelRequest, g: np.ndarray = grad, h: np.ndarray = hess, r: Routing = routing
        ) -> np.ndarray:
            return level_histograms(req, codes, bins, g, h, layout, r)

        tree = grow_tree(layout, params, histograms)
        trees.append(tree)
        leaf = routing.nodes(tree, codes, np.asarray(missing))  # one step past the last level
        margin = margin + tree.value[leaf]
    return TreeEnsemble(base, missing, tuple(trees))
