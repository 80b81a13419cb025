"""The best split of every node of a level, from its gradient/hessian histogram.

XGBoost's rules, so the same histograms give XGBoost's splits (its `hist` evaluator):
- a leaf's weight is -G / (H + lambda), clamped to the node's bounds (monotone constraints);
  a side's gain given its weight w is -(2 G w + (H + lambda) w^2), i.e. G^2 / (H + lambda)
  when nothing clamps it; a split's loss change is left + right - the node's own;
- per feature, thresholds over the regular bins are scanned upward with the missing bin sent
  right, then, when the node has missing values, downward with it sent left (the first best
  one wins, as in XGBoost's strict comparison); across features the lower index wins a tie;
- a feature's special values (each a bin of its own after the regular ones) are no magnitude:
  every assignment of its special and missing bins to the two sides is tried, with each
  regular threshold (an assignment sending an empty bin left is skipped, as the downward scan
  is without missing values). Without special values this is exactly the two scans above;
- a tie is a tie up to rounding: gains within `TIE` of the node's own gain scale count as
  equal. Sums of the same numbers in another order (the federation's per-institution
  histograms against the pooled rows') differ in their last bits, and two splits that make
  the same partition (two features that agree inside a small node) have equal gains but for
  those bits: without the tolerance, the order of summation would choose between them;
- both children need a hessian sum of at least `min_child_weight`; a split on a feature
  constrained increasing (decreasing) is invalid when the left weight exceeds (falls below)
  the right one;
- a categorical feature's splits are sets of categories (`jointcredit.models.trees.categorical`),
  its threshold `CATEGORY_SPLIT` and its left set in `category_left`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jointcredit.models.trees.categorical import CategoryCandidates, category_candidates
from jointcredit.models.trees.params import NO_MISSING, BinLayout, TreeParams
from jointcredit.models.trees.tree import CATEGORY_SPLIT

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
    sends regular codes <= t left (-1: none); `default_left` sends the missing bin left;
    `special_left` the special bins whose bit is set (`special_bit`); `category_left` (nodes,
    `layout.category_width`) the categories sent left by a set split; `left`/`right` are
    the children's (G, H) sums."""

    gain: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    default_left: np.ndarray
    special_left: np.ndarray
    category_left: np.ndarray
    left: np.ndarray
    right: np.ndarray


def special_bit(special: int, n_special: int) -> int:
    """The bit of special value `special` (0-based, in the schema's order) in a node's
    `special_left`, counted down from the missing code (code missing - 1 - bit), so routing
    needs only each feature's missing code."""
    return n_special - 1 - special


def best_splits(
    hist: np.ndarray,
    sums: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    layout: BinLayout,
    params: TreeParams,
    present: np.ndarray | None = None,
) -> LevelSplits:
    """`hist` (nodes, total_bins, 2), `sums` (nodes, 2) each node's (G, H), `lower`/`upper`
    (nodes,) its weight bounds; `present` (total_bins,): which bins have training rows at
    all (the root's histogram; categories without any are in no set)."""
    n = len(sums)
    lam, mcw = params.reg_lambda, params.min_child_weight
    parent_w = leaf_weight(sums[:, 0], sums[:, 1], lam, lower, upper)
    parent_gain = gain_given_weight(sums[:, 0], sums[:, 1], lam, parent_w)
    best = LevelSplits(
        gain=np.full(n, -np.inf),
        feature=np.full(n, -1, dtype=np.int64),
        threshold=np.full(n, -1, dtype=np.int64),
        default_left=np.zeros(n, dtype=bool),
        special_left=np.zeros(n, dtype=np.int64),
        category_left=np.zeros((n, layout.category_width), dtype=bool),
        left=np.zeros((n, 2)),
        right=np.zeros((n, 2)),
    )
    lo, hi = lower[:, None], upper[:, None]
    tie = TIE * (np.abs(parent_gain) + 1.0)
    rows = np.arange(n)
    for j in range(layout.n_features):
        k = layout.ordered_bins(j)
        if k == 0:
            continue
        sets: CategoryCandidates | None = None
        if layout.is_categorical(j):
            offset = int(layout.offsets[j])
            seen = None if present is None else present[offset : offset + k]
            sets = category_candidates(hist, sums, layout, j, lam, mcw, seen)
            left = sets.left
            possible: np.ndarray | bool = True
        else:
            cand = _candidates(hist, sums, layout, j)
            left, possible = cand.left, cand.possible
        right = sums[:, None, :] - left
        gl, hl, gr, hr = left[..., 0], left[..., 1], right[..., 0], right[..., 1]
        wl = leaf_weight(gl, hl, lam, lo, hi)
        wr = leaf_weight(gr, hr, lam, lo, hi)
        gain = gain_given_weight(gl, hl, lam, wl) + gain_given_weight(gr, hr, lam, wr)
        gain = gain - parent_gain[:, None]
        valid = (hl >= mcw) & (hr >= mcw) & (hl > 0) & (hr > 0) & possible
        c = params.constraint(j)
        # Ordering constrains the regular values only: whichever side a special or missing
        # bin takes, the regular values below the threshold must not outweigh those above.
        if c > 0:
            valid &= wl <= wr
        elif c < 0:
            valid &= wl >= wr
        gain = np.where(valid, gain, -np.inf)
        top = gain.max(axis=1)
        pick = np.argmax(gain >= (top - tie)[:, None], axis=1)  # the first of the best
        better = top > best.gain + tie
        if not better.any():
            continue
        best.gain[better] = gain[rows, pick][better]
        best.feature[better] = j
        if sets is not None:
            best.threshold[better] = CATEGORY_SPLIT
            best.default_left[better] = sets.default_left[pick][better]
            best.special_left[better] = 0
            best.category_left[better] = sets.left_sets(
                pick[better], rows[better], layout.category_width
            )
        else:
            best.threshold[better] = cand.threshold[pick][better]
            best.default_left[better] = cand.default_left[pick][better]
            best.special_left[better] = cand.special_left[pick][better]
            best.category_left[better] = False
        best.left[better] = left[rows, pick][better]
        best.right[better] = right[rows, pick][better]
    return best


@dataclass(frozen=True)
class _Candidates:
    """Every split of one feature, in the order ties are broken: per assignment of the
    special and missing bins to the left (none first), each regular threshold; `left`
    (nodes, candidates, 2) the left side's sums, `possible` (nodes, candidates) whether every
    bin sent left by the assignment has rows in the node."""

    left: np.ndarray
    possible: np.ndarray
    threshold: np.ndarray
    default_left: np.ndarray
    special_left: np.ndarray


def _candidates(hist: np.ndarray, sums: np.ndarray, layout: BinLayout, j: int) -> _Candidates:
    n = len(sums)
    k, s, m = layout.ordered_bins(j), layout.n_special(j), layout.missing[j]
    offset = int(layout.offsets[j])
    extra_codes = list(range(k, k + s)) + ([m] if m != NO_MISSING else [])
    extra = hist[:, [offset + c for c in extra_codes], :]  # (nodes, extras, 2)
    present = extra[..., 1] > 0
    n_extra = len(extra_codes)
    has_missing = m != NO_MISSING
    below = np.concatenate([np.zeros((n, 1, 2)), np.cumsum(hist[:, offset : offset + k], 1)], 1)
    above = below[:, -1:, :] - below  # regular codes > t, for t = -1 .. k-1
    ascending, descending = np.arange(-1, k), np.arange(k - 1, -2, -1)
    lefts, possible, thresholds, defaults, specials = [], [], [], [], []
    for a in range(2**n_extra):
        to_left = np.array([(a >> e) & 1 for e in range(n_extra)], dtype=bool)
        missing_left = has_missing and bool(to_left[-1])
        extra_left = extra[:, to_left, :].sum(axis=1)
        extra_right = extra[:, ~to_left, :].sum(axis=1)
        if missing_left:
            # XGBoost's downward scan: the left side is the node less what lies right.
            t = descending
            left = sums[:, None, :] - above[:, t + 1, :] - extra_right[:, None, :]
        else:
            t = ascending
            left = below[:, t + 1, :] + extra_left[:, None, :]
        lefts.append(left)
        possible.append(np.repeat(np.all(present[:, to_left], axis=1)[:, None], k + 1, axis=1))
        thresholds.append(t)
        defaults.append(np.full(k + 1, missing_left))
        bits = sum(1 << special_bit(i, s) for i in range(s) if to_left[i])
        specials.append(np.full(k + 1, bits, dtype=np.int64))
    return _Candidates(
        left=np.concatenate(lefts, axis=1),
        possible=np.concatenate(possible, axis=1),
        threshold=np.concatenate(thresholds),
        default_left=np.concatenate(defaults),
        special_left=np.concatenate(specials),
    )
