"""The best split of every node of a level, from its gradient/hessian histogram.

XGBoost's rules, so the same histograms give XGBoost's splits (its `hist` evaluator):
- a leaf's weight is -G / (H + lambda), clamped to the node's bounds (monotone constraints);
  a side's gain given its weight w is -(2 G w + (H + lambda) w^2), i.e. G^2 / (H + lambda)
  when nothing clamps it; a split's loss change is left + right - the node's own;
- per feature, thresholds are scanned upward with the missing bin sent right, then, when the
  node has missing values, downward with it sent left (the first best one wins, as in
  XGBoost's strict comparison); across features the lower index wins a tie;
- a tie is a tie up to rounding: gains within `TIE` of the node's own gain scale count as
  equal. Sums of the same numbers in another order (the federation's per-institution
  histograms against the pooled rows') differ in their last bits, and two splits that make
  the same partition (two features that agree inside a small node) have equal gains but for
  those bits: without the tolerance, the order of summation would choose between them;
- both children need a hessian sum of at least `min_child_weight`; a split on a feature
  constrained increasing (decreasing) is invalid when the left weight exceeds (falls below)
  the right one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jointcredit.models.trees.params import NO_MISSING, BinLayout, TreeParams

TIE = 1e-9  # relative to the node's gain scale: differences below it are rounding


def leaf_weight(
    g: np.ndarray, h: np.ndarray, lam: float, lower: np.ndarray, upper: np.ndarray
) -> np.ndarray:
    """Newton step -G / (H + lambda), clamped to [lower, upper]; 0 where H + lambda is 0."""
    denom = h + lam
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(denom > 0, -g / np.where(denom > 0, denom, 1.0), 0.0)
    out: np.ndarray = np.clip(w, lower, upper)
    return out


def gain_given_weight(g: np.ndarray, h: np.ndarray, lam: float, w: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.where(h > 0, -(2.0 * g * w + (h + lam) * w * w), 0.0)
    return out


@dataclass(frozen=True)
class LevelSplits:
    """Per node of a level: the best split found (gain -inf: none is valid). `threshold` t
    sends codes <= t left (-1: only the missing bin goes left); `left`/`right` are the
    children's (G, H) sums."""

    gain: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    default_left: np.ndarray
    left: np.ndarray
    right: np.ndarray


def best_splits(
    hist: np.ndarray,
    sums: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    layout: BinLayout,
    params: TreeParams,
) -> LevelSplits:
    """`hist` (nodes, total_bins, 2), `sums` (nodes, 2) each node's (G, H), `lower`/`upper`
    (nodes,) its weight bounds."""
    n = len(sums)
    lam, mcw = params.reg_lambda, params.min_child_weight
    parent_w = leaf_weight(sums[:, 0], sums[:, 1], lam, lower, upper)
    parent_gain = gain_given_weight(sums[:, 0], sums[:, 1], lam, parent_w)
    best = LevelSplits(
        gain=np.full(n, -np.inf),
        feature=np.full(n, -1, dtype=np.int64),
        threshold=np.full(n, -1, dtype=np.int64),
        default_left=np.zeros(n, dtype=bool),
        left=np.zeros((n, 2)),
        right=np.zeros((n, 2)),
    )
    offsets = layout.offsets
    lo, hi = lower[:, None], upper[:, None]
    tie = TIE * (np.abs(parent_gain) + 1.0)
    for j in range(layout.n_features):
        k = layout.ordered_bins(j)
        if k == 0:
            continue
        block = hist[:, offsets[j] : offsets[j] + k, :]
        cum = np.cumsum(block, axis=1)
        # Upward (missing right), thresholds 0..k-1; downward (missing left), thresholds
        # k-2..-1 in the order XGBoost scans them.
        up_left = cum
        ordered_total = cum[:, -1:, :]
        before = np.concatenate([np.zeros((n, 1, 2)), cum[:, :-1, :]], axis=1)
        down_left = (sums[:, None, :] - (ordered_total - before))[:, ::-1, :]
        has_missing = np.zeros(n, dtype=bool)
        if layout.missing[j] != NO_MISSING:
            has_missing = hist[:, offsets[j] + layout.missing[j], 1] > 0
        left = np.concatenate([up_left, down_left], axis=1)
        right = sums[:, None, :] - left
        gl, hl, gr, hr = left[..., 0], left[..., 1], right[..., 0], right[..., 1]
        wl = leaf_weight(gl, hl, lam, lo, hi)
        wr = leaf_weight(gr, hr, lam, lo, hi)
        gain = gain_given_weight(gl, hl, lam, wl) + gain_given_weight(gr, hr, lam, wr)
        gain = gain - parent_gain[:, None]
        valid = (hl >= mcw) & (hr >= mcw) & (hl > 0) & (hr > 0)
        valid[:, k:] &= has_missing[:, None]
        c = params.constraint(j)
        if c > 0:
            valid &= wl <= wr
        elif c < 0:
            valid &= wl >= wr
        gain = np.where(valid, gain, -np.inf)
        top = gain.max(axis=1)
        pick = np.argmax(gain >= (top - tie)[:, None], axis=1)  # the first of the best
        rows = np.arange(n)
        g_best = gain[rows, pick]
        better = top > best.gain + tie
        if not better.any():
            continue
        down = pick >= k
        threshold = np.where(down, k - 2 - (pick - k), pick)
        best.gain[better] = g_best[better]
        best.feature[better] = j
        best.threshold[better] = threshold[better]
        best.default_left[better] = down[better]
        best.left[better] = left[rows, pick][better]
        best.right[better] = right[rows, pick][better]
    return best
