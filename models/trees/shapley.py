"""Exact interventional TreeSHAP against one reference applicant, for any split this engine
makes (thresholds, special values' sides, sets of categories).

Why not `shap.TreeExplainer` (still the reference the tests hold this to): its custom trees
split by thresholds only. A set of categories becomes a chain of thresholds over per-tree
rank columns (`threshold_form`), exact but with the subtrees copied per run of ranks, so a
deep tree that splits many-valued categories by sets in many branches grows by orders of
magnitude, and shap's cost per call grows with the largest tree: over the service's latency
budget for one applicant (docs/SERVICE.md).

With one reference r, v(S) = f(x on S, r elsewhere) is a sum over leaves. A leaf is reached
by a hybrid exactly when, for every feature on its path, the hybrid's value of it passes all
of the path's tests on it: for a feature x passes and r fails, it must come from x (set A);
r passes and x fails, from r (set B); both fail, never. So a leaf's share of v is its value
times the game "A all in, B all out", whose Shapley values are closed-form: each of A gets
(|A|-1)! |B|! / (|A|+|B|)!, each of B minus |A|! (|B|-1)! / (|A|+|B|)!. Everything is
vectorised over rows as sparse products: which tests each row passes, per (leaf, feature)
how many it fails, per leaf the sizes of A and B.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from jointcredit.models.trees.ensemble import TreeEnsemble
from jointcredit.models.trees.tree import LEAF, goes_left, in_category

CHUNK_CELLS = 1 << 20


@dataclass(frozen=True)
class _Paths:
    """Every internal node of the ensemble (flat), and per (leaf, feature on its path) pair
    the tests it must pass."""

    feature: np.ndarray  # (nodes,) per internal node
    threshold: np.ndarray
    default_left: np.ndarray
    special_left: np.ndarray
    category_left: np.ndarray  # (nodes, width)
    fails: sparse.csr_matrix  # (2 * nodes, pairs): [goes left, goes right] -> pair's test fails
    pair_leaf: np.ndarray  # (pairs,) the pair's leaf
    pair_feature: np.ndarray  # (pairs,)
    leaf_value: np.ndarray  # (leaves,)
    depth: int


def _paths(ensemble: TreeEnsemble) -> _Paths:
    feature, threshold, default_left, special_left, categories = [], [], [], [], []
    tests: list[tuple[int, bool, int]] = []  # (flat node, must go left, pair)
    pair_leaf: list[int] = []
    pair_feature: list[int] = []
    leaf_value: list[float] = []
    width = ensemble.category_width
    offset = 0
    depth = 0
    for t in ensemble.trees:
        internal = np.flatnonzero(t.feature != LEAF)
        flat_id = np.full(t.n_nodes, -1)
        flat_id[internal] = np.arange(len(internal)) + offset
        offset += len(internal)
        feature.append(t.feature[internal])
        threshold.append(t.threshold[internal])
        default_left.append(t.default_left[internal])
        special_left.append(t.special_left[internal])
        padded = np.zeros((len(internal), width), dtype=bool)
        padded[:, : t.category_left.shape[1]] = t.category_left[internal]
        categories.append(padded)
        # Each node's path from the root: (node, must go left).
        path: dict[int, list[tuple[int, bool]]] = {0: []}
        for node in range(t.n_nodes):  # parents before children
            here = path.pop(node)
            if t.feature[node] != LEAF:
                path[int(t.left[node])] = [*here, (node, True)]
                path[int(t.right[node])] = [*here, (node, False)]
                continue
            leaf = len(leaf_value)
            leaf_value.append(float(t.value[node]))
            depth = max(depth, len(here))
            pair_of: dict[int, int] = {}
            for n, left in here:
                f = int(t.feature[n])
                if f not in pair_of:
                    pair_of[f] = len(pair_leaf)
                    pair_leaf.append(leaf)
                    pair_feature.append(f)
                tests.append((int(flat_id[n]), left, pair_of[f]))
    n_nodes = offset
    # Rows of `fails`: [goes left (fails a "go right" test), goes right (fails "go left")].
    fail_rows = [n + n_nodes if left else n for n, left, _ in tests]
    fails = sparse.csr_matrix(
        (np.ones(len(tests), dtype=np.float32), (fail_rows, [p for _, _, p in tests])),
        shape=(2 * n_nodes, len(pair_leaf)),
    )
    return _Paths(
        feature=np.concatenate([np.zeros(0, np.int32), *feature]),
        threshold=np.concatenate([np.zeros(0, np.int32), *threshold]),
        default_left=np.concatenate([np.zeros(0, bool), *default_left]),
        special_left=np.concatenate([np.zeros(0, np.int64), *special_left]),
        category_left=np.concatenate([np.zeros((0, width), bool), *categories]),
        fails=fails,
        pair_leaf=np.array(pair_leaf, dtype=np.int64),
        pair_feature=np.array(pair_feature, dtype=np.int64),
        leaf_value=np.array(leaf_value, dtype=np.float64),
        depth=depth,
    )


def _indicator(index: np.ndarray, width: int, dtype: type = np.float64) -> sparse.csr_matrix:
    """(len(index), width): row i has a 1 in column index[i]."""
    return sparse.csr_matrix(
        (np.ones(len(index), dtype=dtype), (np.arange(len(index)), index)),
        shape=(len(index), width),
    )


def _coefficients(depth: int) -> tuple[np.ndarray, np.ndarray]:
    """[a, b]: a member of A's share and a member of B's share (negative) of the game
    "A all in, B all out" with |A| = a and |B| = b."""
    size = depth + 1
    share_a, share_b = np.zeros((size, size)), np.zeros((size, size))
    for a in range(size):
        for b in range(size - a):
            n = math.factorial(a + b)
            if a:
                share_a[a, b] = math.factorial(a - 1) * math.factorial(b) / n
            if b:
                share_b[a, b] = -math.factorial(a) * math.factorial(b - 1) / n
    return share_a, share_b


class ReferenceShapley:
    """TreeSHAP values of `ensemble` for rows of bin codes against the `reference` row:
    per row and feature, the Shapley value of v(S) = margin(row on S, reference elsewhere);
    they add up to margin(row) - margin(reference)."""

    def __init__(self, ensemble: TreeEnsemble, reference: np.ndarray) -> None:
        ref = np.asarray(reference, dtype=np.int64).reshape(1, -1)
        if ref.shape[1] != ensemble.n_features:
            raise ValueError(f"a reference of {ref.shape[1]} codes for {ensemble.n_features}")
        self.ensemble = ensemble
        self.paths = _paths(ensemble)
        p = self.paths
        self._share_a, self._share_b = _coefficients(p.depth)
        # The reference is fixed: where it fails a pair's tests, the row passing them puts
        # the feature in A (else the leaf is dead); where it passes, the row failing them
        # puts it in B. So only the row's passes are computed per call.
        r_passes = self._passes(ref)[0]
        n_leaves = len(p.leaf_value)
        self._a_pairs = np.flatnonzero(~r_passes)
        self._b_pairs = np.flatnonzero(r_passes)
        self._a_leaf = p.pair_leaf[self._a_pairs]
        self._b_leaf = p.pair_leaf[self._b_pairs]
        self._a_by_leaf = _indicator(self._a_leaf, n_leaves, np.float32)
        self._b_by_leaf = _indicator(self._b_leaf, n_leaves, np.float32)
        self._a_by_feature = _indicator(p.pair_feature[self._a_pairs], ensemble.n_features)
        self._b_by_feature = _indicator(p.pair_feature[self._b_pairs], ensemble.n_features)
        # A leaf whose pairs the reference fails is alive only if the row passes them all.
        self._a_needed = np.bincount(self._a_leaf, minlength=n_leaves)

    def _left(self, codes: np.ndarray) -> np.ndarray:
        """(rows, internal nodes): whether each row goes left at each node (a subclass may
        route some nodes otherwise: models/vertical/shapley.py)."""
        p = self.paths
        missing = np.asarray(self.ensemble.missing)
        code = codes[:, p.feature]
        nodes = np.broadcast_to(np.arange(len(p.feature)), code.shape)
        left: np.ndarray = goes_left(
            code,
            missing[p.feature],
            p.threshold,
            p.default_left,
            p.special_left,
            in_category(p.category_left, nodes, code),
        )
        return left

    def _passes(self, codes: np.ndarray) -> np.ndarray:
        """(rows, pairs): whether each row passes every test of the pair's leaf path on the
        pair's feature."""
        p = self.paths
        left = self._left(codes)
        went = np.concatenate([left, ~left], axis=1).astype(np.float32)
        failed = np.asarray(went @ p.fails)
        out: np.ndarray = failed == 0
        return out

    def __call__(self, codes: np.ndarray) -> np.ndarray:
        """(rows, features) Shapley values."""
        codes = np.asarray(codes, dtype=np.int64)
        if codes.ndim != 2 or codes.shape[1] != self.ensemble.n_features:
            raise ValueError(f"codes of shape {codes.shape}")
        if not len(codes) or not len(self.paths.pair_leaf):
            return np.zeros((len(codes), self.ensemble.n_features))
        # Rows x (leaf, feature) pairs per step: a few MB, in cache, whatever the batch.
        step = max(1, CHUNK_CELLS // len(self.paths.pair_leaf))
        return np.concatenate(
            [self._chunk(codes[i : i + step]) for i in range(0, len(codes), step)]
        )

    def _chunk(self, codes: np.ndarray) -> np.ndarray:
        passes = self._passes(codes)
        in_a = passes[:, self._a_pairs].astype(np.float32)
        in_b = (~passes[:, self._b_pairs]).astype(np.float32)
        size_a = np.asarray(in_a @ self._a_by_leaf).astype(np.int64)
        size_b = np.asarray(in_b @ self._b_by_leaf).astype(np.int64)
        value = np.where(size_a == self._a_needed, self.paths.leaf_value, 0.0)
        share_a = self._share_a[size_a, size_b] * value
        share_b = self._share_b[size_a, size_b] * value
        out: np.ndarray = np.asarray((in_a * share_a[:, self._a_leaf]) @ self._a_by_feature)
        out += np.asarray((in_b * share_b[:, self._b_leaf]) @ self._b_by_feature)
        return out
