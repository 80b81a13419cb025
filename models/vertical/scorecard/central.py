"""The vertical scorecard's central equivalent: the same learner on the joined rows (the
same fine bins, classing, WOE and one-step fit, `fit`), with X'X and X'y computed from the
rows' design matrix. The vertical fit equals it to float rounding
(tests/test_vertical_scorecard.py). It is the reference, so it takes nothing from
`label_party`: its inputs come straight from the horizontal binning functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from jointcredit.data.schema import Schema
from jointcredit.models.binning import BinningSpec, count_bins
from jointcredit.models.binning.encoding import woe_features
from jointcredit.models.binning.table import Classing, classify
from jointcredit.models.scorecard import ScoreScale
from jointcredit.models.vertical.scorecard import fit


def central_scorecard(
    own: tuple[pd.DataFrame, BinningSpec],
    platform: tuple[pd.DataFrame, BinningSpec] | Sequence[tuple[pd.DataFrame, BinningSpec]] | None,
    y: np.ndarray,
    schema: Schema,
    *,
    classing: Classing,
    scale: ScoreScale | None = None,
    ridge: float = fit.RIDGE,
    calibration: fit.Calibration = "lda",
) -> fit.VerticalScorecard:
    """(frame, fine bins) of the label party's and the feature party's aligned training rows
    (`platform` None: the label party's features alone, the same learner; a list: several
    feature parties', their features in that order)."""
    frame, fine = own
    y = np.asarray(y).astype(np.int64)
    table = classify(fine, count_bins(frame, y, fine), schema, classing)
    own_woe = woe_features(table)
    own_codes = table.bins.codes(frame)
    columns = [np.ones(len(y))] + [f.values[own_codes[:, a]] for a, f in enumerate(own_woe)]
    features: tuple[fit.PlatformFeature, ...] = ()
    parties = [] if platform is None else [platform] if isinstance(platform, tuple) else platform
    for p_frame, p_fine in parties:
        mine = fit.platform_features(p_fine, count_bins(p_frame, y, p_fine), schema, classing)
        # The coarse bins' own codes of the rows (not the merge map the label party uses).
        coarse = BinningSpec(features=[f.woe.bins for f in mine]).codes(p_frame)
        columns += [f.woe.values[coarse[:, j]] for j, f in enumerate(mine)]
        features += mine
    x = np.column_stack(columns)
    intercept, weights = fit.solve(
        x.T @ x, x.T @ y, int(y.sum()), ridge=ridge, calibration=calibration
    )
    return fit.scorecard(intercept, weights, own_woe, features, scale or ScoreScale())
