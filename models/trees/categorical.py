"""The candidate splits of a categorical feature: sets of categories, as XGBoost's `hist`
evaluator makes them (so the same histograms give XGBoost's categorical splits).

A categorical feature's regular bins are categories with no order. With fewer than
`MAX_CAT_TO_ONEHOT` of them, each category alone against the rest is a candidate (missing on
either side). Otherwise, per node, the categories are sorted by their own Newton weight
-G / (H + lambda) (0 when lighter than `min_child_weight`; float32 and a stable sort, as
XGBoost), and every prefix of that order is a candidate set: scanned forward with missing on
the other side, then backward with missing beside the prefix. Per node, because the best
partition of categories by a Newton step lies (nearly) along that order (Fisher 1958,
Breiman et al. 1984), and one order fixed for all nodes (the codes, or the categories'
overall default rate) misses it: a node of one sector ranks the states unlike another.

XGBoost sends the chosen set right; here `left` holds the complement (the categories that go
left), which is the same partition. Categories without training rows anywhere (`present`,
from the root's histogram) are in no candidate set and go left, as XGBoost, which never
saw them, sends them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jointcredit.models.trees.params import NO_MISSING, BinLayout

# XGBoost's defaults for `max_cat_to_onehot` and `max_cat_threshold`.
MAX_CAT_TO_ONEHOT = 4
MAX_CAT_THRESHOLD = 64


@dataclass(frozen=True)
class CategoryCandidates:
    """Every split of one categorical feature, per node, in XGBoost's order: `left` (nodes,
    candidates, 2) the left side's (G, H) sums; `default_left` (candidates,) whether missing
    goes left; the set of each candidate follows from `order` and `size`: the first `size`
    categories of the node's `order` go right (one-hot: `order` is the identity and `size`
    is the single category's position, marked by `onehot`)."""

    left: np.ndarray
    default_left: np.ndarray
    size: np.ndarray
    order: np.ndarray  # (nodes, k): each node's categories, lightest weight first
    onehot: bool

    def left_sets(self, picks: np.ndarray, rows: np.ndarray, width: int) -> np.ndarray:
        """The categories sent left (rows, width) by candidate `picks[i]` at node `rows[i]`."""
        k = self.order.shape[1]
        out = np.zeros((len(rows), width), dtype=bool)
        out[:, :k] = True
        for i, (node, pick) in enumerate(zip(rows, picks, strict=True)):
            if self.onehot:
                out[i, int(self.size[pick])] = False
            else:
                out[i, self.order[node, : int(self.size[pick])]] = False
        return out


def category_weights(hist: np.ndarray, lam: float, min_child_weight: float) -> np.ndarray:
    """XGBoost's `CalcWeightCat`: each category's unconstrained Newton weight, 0 where its
    hessian is below `min_child_weight` or not positive; float32, the precision it sorts in."""
    g, h = hist[..., 0], hist[..., 1]
    light = (h < min_child_weight) | (h <= 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(light, 0.0, -g / np.where(light, 1.0, h + lam))
    out: np.ndarray = w.astype(np.float32)
    return out


def category_candidates(
    hist: np.ndarray,
    sums: np.ndarray,
    layout: BinLayout,
    j: int,
    lam: float,
    min_child_weight: float,
    present: np.ndarray | None = None,
) -> CategoryCandidates:
    """`hist` (nodes, total_bins, 2), `sums` (nodes, 2): feature j's candidate sets;
    `present` (its k categories): which have training rows (default: all)."""
    n = len(sums)
    k = layout.ordered_bins(j)
    offset = int(layout.offsets[j])
    cats = hist[:, offset : offset + k, :]
    has_missing = layout.missing[j] != NO_MISSING
    missing = hist[:, offset + layout.missing[j], :] if has_missing else np.zeros((n, 2))
    seen = np.flatnonzero(np.ones(k, dtype=bool) if present is None else present)
    kp = len(seen)
    if kp < MAX_CAT_TO_ONEHOT:
        # Per category: it alone right with missing left, then with missing right too.
        right_alone = cats[:, seen, :]
        right_with_missing = right_alone + missing[:, None, :]
        left = np.stack([sums[:, None, :] - right_alone, sums[:, None, :] - right_with_missing], 2)
        return CategoryCandidates(
            left=left.reshape(n, 2 * kp, 2),
            default_left=np.tile([True, False], kp),
            size=np.repeat(seen, 2),
            order=np.broadcast_to(np.arange(k), (n, k)),
            onehot=True,
        )
    weights = category_weights(cats, lam, min_child_weight)
    weights[:, np.setdiff1d(np.arange(k), seen)] = np.inf  # never in a set: sorted last
    order = np.argsort(weights, axis=1, kind="stable")
    prefix = np.cumsum(np.take_along_axis(cats, order[..., None], axis=1), axis=1)
    scan = min(MAX_CAT_THRESHOLD, kp)
    forward = np.arange(scan - 1)  # the first j + 1 categories right, missing left
    backward = np.arange(kp - 1, kp - scan, -1)  # the first j right, missing with them
    total = prefix[:, kp - 1 : kp, :]
    left_forward = sums[:, None, :] - prefix[:, forward, :]
    left_backward = total - prefix[:, backward - 1, :]
    return CategoryCandidates(
        left=np.concatenate([left_forward, left_backward], axis=1),
        default_left=np.concatenate(
            [np.ones(len(forward), dtype=bool), np.zeros(len(backward), dtype=bool)]
        ),
        size=np.concatenate([forward + 1, backward]),
        order=order,
        onehot=False,
    )
