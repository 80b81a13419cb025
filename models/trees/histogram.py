"""Gradient and hessian histograms: per node, per feature, per bin, summed over a node's rows.

One weighted `np.bincount` per statistic covers every requested node and every feature at
once: a row's entry for feature j lands at (slot of its node) * total_bins + offset_j + code.
"""

from __future__ import annotations

import numpy as np

from jointcredit.models.trees.params import BinLayout

UNUSED = -1  # a row in no requested node


def flat_bins(codes: np.ndarray, layout: BinLayout) -> np.ndarray:
    """(rows, features) codes -> the same rows' positions on a histogram's flat bin axis."""
    layout.check_codes(codes)
    out: np.ndarray = codes.astype(np.int64) + layout.offsets
    return out


def build(
    bins: np.ndarray,
    grad: np.ndarray,
    hess: np.ndarray,
    slot: np.ndarray,
    n_slots: int,
    total_bins: int,
) -> np.ndarray:
    """(n_slots, total_bins, 2) float64: gradient and hessian sums of the rows whose `slot` is
    s (`UNUSED`: none), from `bins` = `flat_bins(codes)`."""
    rows = np.flatnonzero(slot != UNUSED)
    out = np.zeros((n_slots, total_bins, 2))
    if n_slots == 0 or len(rows) == 0:
        return out
    index = (bins[rows] + (slot[rows] * total_bins)[:, None]).ravel()
    width = bins.shape[1]
    size = n_slots * total_bins
    g = np.repeat(grad[rows].astype(np.float64), width)
    h = np.repeat(hess[rows].astype(np.float64), width)
    out[:, :, 0] = np.bincount(index, weights=g, minlength=size).reshape(n_slots, total_bins)
    out[:, :, 1] = np.bincount(index, weights=h, minlength=size).reshape(n_slots, total_bins)
    return out
