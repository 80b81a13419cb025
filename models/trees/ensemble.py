"""A boosted tree ensemble over bin codes: how it is stored, scored and handed to TreeSHAP.

Scoring needs nothing of the training code: the base margin, each feature's missing code and
the trees' flat arrays. All trees step down together, one level per step, so a batch (or one
applicant) costs `depth` vectorised steps whatever the number of trees.

Stored as plain arrays (`to_arrays`: the artifact's weights.npz, loaded without pickle):
every tree's node arrays concatenated, `tree_start` the offsets of each tree's root,
`base_margin` and `missing` per feature.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from jointcredit.models.trees.threshold_form import ShapColumns, shap_columns, threshold_form
from jointcredit.models.trees.tree import (
    CATEGORY_SPLIT,
    FIELDS,
    LEAF,
    Tree,
    check_structure,
    check_thresholds,
    goes_left,
    in_category,
)

TREE_START = "tree_start"
BASE_MARGIN = "base_margin"
MISSING = "missing"
SPECIAL_LEFT = "special_left"
CATEGORY_LEFT = "category_left"


def sigmoid(z: np.ndarray) -> np.ndarray:
    out: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * z))
    return out


@dataclass(frozen=True)
class TreeEnsemble:
    base_margin: float
    missing: tuple[int, ...]  # per feature: its missing code (-1: none)
    trees: tuple[Tree, ...]

    @property
    def n_features(self) -> int:
        return len(self.missing)

    def margin(self, codes: np.ndarray) -> np.ndarray:
        """Log-odds per row of a (rows, features) code matrix."""
        if codes.ndim != 2 or codes.shape[1] != self.n_features:
            raise ValueError(f"codes of shape {codes.shape} for {self.n_features} features")
        flat = self._flat
        out = np.full(len(codes), self.base_margin)
        if not self.trees or not len(codes):
            return out
        node = np.broadcast_to(flat["start"], (len(codes), len(self.trees))).copy()
        rows = np.arange(len(codes))[:, None]
        missing = np.asarray(self.missing)
        for _ in range(flat["depth"]):
            f = flat["feature"][node]
            fc = np.maximum(f, 0)
            code = codes[rows, fc]
            go_left = goes_left(
                code,
                missing[fc],
                flat["threshold"][node],
                flat["default_left"][node],
                flat["special_left"][node],
                in_category(flat["category_left"], node, code),
            )
            node = np.where(go_left, flat["left"][node], flat["right"][node])
        total: np.ndarray = out + flat["value"][node].sum(axis=1)
        return total

    def predict_pd(self, codes: np.ndarray) -> np.ndarray:
        return sigmoid(self.margin(codes))

    @cached_property
    def _flat(self) -> dict[str, Any]:
        """Every tree's nodes on one axis; a leaf's children are itself, so rows that reached
        a leaf stay there while deeper trees go on."""
        start = np.cumsum([0] + [t.n_nodes for t in self.trees])[:-1].astype(np.int64)
        parts: dict[str, list[np.ndarray]] = {k: [] for k in FIELDS}
        for t, s in zip(self.trees, start, strict=True):
            leaf = t.feature == LEAF
            own = np.arange(t.n_nodes) + s
            parts["left"].append(np.where(leaf, own, t.left + s))
            parts["right"].append(np.where(leaf, own, t.right + s))
            for k in ("feature", "threshold", "default_left", "special_left", "value"):
                parts[k].append(getattr(t, k))
            parts["category_left"].append(self._padded(t))
        flat: dict[str, Any] = {k: np.concatenate(v) for k, v in parts.items() if v}
        flat["start"] = start
        flat["depth"] = max((t.depth for t in self.trees), default=0)
        return flat

    @property
    def category_width(self) -> int:
        return max((t.category_left.shape[1] for t in self.trees), default=0)

    def _padded(self, t: Tree) -> np.ndarray:
        """`t.category_left` widened to the ensemble's width (categories beyond a tree's
        width go right: none of its sets holds them)."""
        out = np.zeros((t.n_nodes, self.category_width), dtype=bool)
        out[:, : t.category_left.shape[1]] = t.category_left
        return out

    # -- storage
    def to_arrays(self) -> dict[str, np.ndarray]:
        empty = Tree.from_arrays({k: np.zeros(0) for k in FIELDS})
        out = {
            k: np.concatenate([getattr(t, k) for t in (empty, *self.trees)])
            for k in FIELDS
            if k != CATEGORY_LEFT
        }
        out[CATEGORY_LEFT] = np.concatenate(
            [np.zeros((0, self.category_width), dtype=bool), *map(self._padded, self.trees)]
        )
        out[TREE_START] = np.cumsum([0] + [t.n_nodes for t in self.trees]).astype(np.int64)
        out[BASE_MARGIN] = np.array([self.base_margin], dtype=np.float64)
        out[MISSING] = np.array(self.missing, dtype=np.int64)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> TreeEnsemble:
        # Ensembles stored before special values had sides of their own send none left.
        if SPECIAL_LEFT not in arrays and "feature" in arrays:
            arrays = {**arrays, SPECIAL_LEFT: np.zeros(len(arrays["feature"]), dtype=np.int64)}
        # Nor did categories go by sets before they could.
        if CATEGORY_LEFT not in arrays and "feature" in arrays:
            arrays = {**arrays, CATEGORY_LEFT: np.zeros((len(arrays["feature"]), 0), dtype=bool)}
        needed = {*FIELDS, TREE_START, BASE_MARGIN, MISSING}
        absent = needed - set(arrays)
        if absent:
            raise ValueError(f"tree ensemble arrays missing: {sorted(absent)}")
        bounds = np.asarray(arrays[TREE_START], dtype=np.int64)
        n = len(arrays["feature"])
        if len(bounds) < 1 or bounds[0] != 0 or bounds[-1] != n or np.any(np.diff(bounds) < 1):
            raise ValueError("tree_start does not partition the nodes")
        trees = []
        for a, b in itertools.pairwise(bounds):
            tree = Tree.from_arrays({k: np.asarray(arrays[k])[a:b] for k in FIELDS})
            _check_tree(tree)
            trees.append(tree)
        missing = tuple(int(m) for m in np.asarray(arrays[MISSING]))
        for t in trees:
            if np.any(t.feature >= len(missing)):
                raise ValueError("a split on a feature the ensemble does not have")
        return cls(float(np.asarray(arrays[BASE_MARGIN])[0]), missing, tuple(trees))

    def digest(self) -> str:
        h = hashlib.sha256()
        for name, a in sorted(self.to_arrays().items()):
            h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    # -- TreeSHAP
    @cached_property
    def shap_columns(self) -> ShapColumns:
        """The columns `shap_inputs` lays out: each feature's codes, then a rank column per
        (tree, categorical feature it splits by sets): `shap_columns.of_feature` maps them
        back."""
        return shap_columns(self.trees, self.missing)

    def shap_model(self) -> dict[str, Any]:
        """The ensemble as `shap.TreeExplainer`'s custom tree model, on `shap_inputs(codes)`
        (codes as floats, the missing code as NaN; a split at t + 0.5 sends codes <= t left;
        a tree sending special bins to learned sides or categories by sets in
        `threshold_form`). Internal nodes carry the cover-weighted mean of their leaves, as
        TreeSHAP expects."""
        trees = []
        for i, t in enumerate(self.trees):
            if np.any(t.special_left) or np.any(t.threshold == CATEGORY_SPLIT):
                form = threshold_form(t, self.missing, self.shap_columns, i)
                trees.append(_shap_tree(form))
                continue
            leaf = t.feature == LEAF
            trees.append(
                {
                    "children_left": np.where(leaf, -1, t.left).astype(np.int64),
                    "children_right": np.where(leaf, -1, t.right).astype(np.int64),
                    "children_default": np.where(
                        leaf, -1, np.where(t.default_left, t.left, t.right)
                    ).astype(np.int64),
                    "features": np.where(leaf, -2, t.feature).astype(np.int64),
                    "thresholds": np.where(leaf, 0.0, t.threshold + 0.5),
                    "values": _node_means(t)[:, None],
                    "node_sample_weight": t.cover.astype(np.float64),
                }
            )
        return {"trees": trees, "base_offset": self.base_margin, "tree_output": "log_odds"}

    def shap_inputs(self, codes: np.ndarray) -> np.ndarray:
        return self.shap_columns.inputs(codes, self.missing)

    def shap_by_feature(self, values: np.ndarray) -> np.ndarray:
        """TreeSHAP values per `shap_inputs` column (rows, columns) added up per feature."""
        out = np.zeros((len(values), self.n_features))
        np.add.at(out.T, self.shap_columns.of_feature, np.asarray(values).T)
        return out


def _shap_tree(form: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """shap's custom tree from `threshold_form`: covers summed up from the leaves, each
    node's value the cover-weighted mean of its children's (children come after parents)."""
    left, right = form["children_left"], form["children_right"]
    cover, values = form["leaf_cover"].copy(), form["leaf_value"].copy()
    for node in range(len(left) - 1, -1, -1):
        if left[node] >= 0:
            lw, rw = cover[left[node]], cover[right[node]]
            cover[node] = lw + rw
            lv, rv = values[left[node]], values[right[node]]
            values[node] = (lw * lv + rw * rv) / cover[node] if cover[node] > 0 else (lv + rv) / 2
    return {
        "children_left": left,
        "children_right": right,
        "children_default": form["children_default"],
        "features": form["features"],
        "thresholds": form["thresholds"],
        "values": values[:, None],
        "node_sample_weight": cover,
    }


def _node_means(t: Tree) -> np.ndarray:
    values = t.value.astype(np.float64).copy()
    for node in range(t.n_nodes - 1, -1, -1):  # children have higher ids than parents
        if t.feature[node] != LEAF:
            lw, rw = t.cover[t.left[node]], t.cover[t.right[node]]
            total = lw + rw
            lv, rv = values[t.left[node]], values[t.right[node]]
            values[node] = (lw * lv + rw * rv) / total if total > 0 else (lv + rv) / 2
    return values


def _check_tree(t: Tree) -> None:
    internal = t.feature != LEAF
    check_structure(t.left, t.right, internal, t.n_nodes)
    check_thresholds(t.threshold, t.category_left, internal)
