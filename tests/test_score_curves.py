"""The validation report's curves from score-band counts equal scikit-learn's on the rows."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from jointcredit.models.score_bands import band_counts, band_edges
from jointcredit.models.scorecard import ScoreScale
from jointcredit.simulations.score_curves import curves, gains_table


def _rows(seed: int = 0, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.25).astype(int)
    pd_ = 1 / (1 + np.exp(-(rng.normal(0, 1, n) + 1.5 * y - 1.5)))
    return y, pd_


def test_one_band_per_score_gives_the_rows_auc_and_ks() -> None:
    y, pd_ = _rows()
    scale = ScoreScale()
    score = scale.score(pd_)
    edges = np.arange(scale.min_score, scale.max_score + 2, dtype=float)  # one band per score
    band = (score - scale.min_score).astype(int)
    good = np.bincount(band[y == 0], minlength=len(edges) - 1)
    bad = np.bincount(band[y == 1], minlength=len(edges) - 1)
    c = curves(edges, good, bad)
    # A low score means risk: the rank statistic of -score, ties counted half.
    assert c.auc == pytest.approx(roc_auc_score(y, -score), abs=1e-12)
    fpr, tpr, _ = roc_curve(y, -score)
    assert c.ks == pytest.approx(float(np.max(tpr - fpr)), abs=1e-12)
    assert c.gini == pytest.approx(2 * c.auc - 1)


def test_band_counts_cover_every_row_and_the_scale() -> None:
    y, pd_ = _rows(1)
    scale = ScoreScale()
    goods, bads = band_counts(y, pd_, scale)
    assert len(goods) == len(band_edges(scale)) - 1 == 60
    assert (sum(goods), sum(bads)) == (int((y == 0).sum()), int(y.sum()))
    # The extremes land in the first and last bands.
    g, b = band_counts(np.array([0, 1]), np.array([1e-12, 1 - 1e-12]), scale)
    assert (g[-1], b[0]) == (1, 1)
    # Ten-point bands lose only within-band order: close to the rows' AUC.
    c = curves(np.asarray(band_edges(scale)), np.asarray(goods), np.asarray(bads))
    assert c.auc == pytest.approx(roc_auc_score(y, pd_), abs=0.01)


def test_gains_table_groups_riskiest_first_and_captures_every_bad() -> None:
    y, pd_ = _rows(2)
    scale = ScoreScale()
    goods, bads = band_counts(y, pd_, scale)
    rows = gains_table(np.asarray(band_edges(scale)), np.asarray(goods), np.asarray(bads))
    assert 5 <= len(rows) <= 10
    assert sum(r.applicants for r in rows) == len(y)
    assert sum(r.bads for r in rows) == int(y.sum())
    assert rows[-1].cumulative_bad_capture == pytest.approx(1.0)
    assert rows[0].bad_rate > rows[-1].bad_rate
    assert all(a.score_to <= b.score_from for a, b in itertools.pairwise(rows))
