"""Histogram gradient-boosted trees over bin codes (binary log-loss), built to equal XGBoost's
`hist` trees on the same bins and to be grown federatedly without loss.

- `params`: the bin layout of the codes and the boosting parameters;
- `histogram`: per-node gradient/hessian histograms (one `bincount` per level);
- `split`: the best split of every node of a level (regularised gain, the sides of the
  missing and special bins, monotone constraints); `categorical`: sets of categories;
- `bins`: the trees on the federation's agreed bins (`BinningSpec`);
- `grower`: one tree level by level from histograms, wherever they come from;
- `tree`, `ensemble`: the trees as flat arrays, scoring, storage, shap's view
  (`threshold_form`: special bins' sides and category sets as threshold splits);
- `shapley`: exact interventional TreeSHAP against one reference row, for any split;
- `boost`: the central engine (pooled rows, or one institution's own).
"""

from jointcredit.models.trees.boost import base_margin, gradients, train
from jointcredit.models.trees.ensemble import TreeEnsemble
from jointcredit.models.trees.grower import LevelRequest, TreeGrower
from jointcredit.models.trees.params import NO_MISSING, BinLayout, TreeParams
from jointcredit.models.trees.tree import Tree

__all__ = [
    "NO_MISSING",
    "BinLayout",
    "LevelRequest",
    "Tree",
    "TreeEnsemble",
    "TreeGrower",
    "TreeParams",
    "base_margin",
    "gradients",
    "train",
]
