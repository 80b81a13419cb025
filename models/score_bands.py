"""Score bands: the final evaluation's counts of goods and bads per band of the score scale,
which the validation report's ROC, KS, gains table and calibration are drawn from (summed over
institutions; counts only, never a row)."""

from __future__ import annotations

import numpy as np

from jointcredit.models.scorecard import ScoreScale

BAND_POINTS = 10


def band_edges(scale: ScoreScale) -> list[float]:
    """From the scale's minimum to its maximum in steps of `BAND_POINTS` (the last band also
    holds the maximum score)."""
    return [float(e) for e in np.arange(scale.min_score, scale.max_score + 1, BAND_POINTS)]


def band_counts(y: np.ndarray, pd_: np.ndarray, scale: ScoreScale) -> tuple[list[int], list[int]]:
    """(goods, bads) per band of the scores `pd_` stand for."""
    edges = np.asarray(band_edges(scale))
    bands = len(edges) - 1
    band = np.clip(np.searchsorted(edges, scale.score(pd_), side="right") - 1, 0, bands - 1)
    bad = np.asarray(y).astype(bool)
    goods = np.bincount(band[~bad], minlength=bands)
    bads = np.bincount(band[bad], minlength=bands)
    return [int(v) for v in goods], [int(v) for v in bads]
