"""What the vertical scorecard and its central equivalent share: the feature party's coarse
classing from counts alone, the one-step logistic fit on sufficient statistics, and the
points table.

The fit is one Newton (IRLS) step of the logistic log-likelihood from the intercept-only
model w0 = (z0, 0, ..., 0), z0 = logit(p0), p0 the training bad rate: there every row's
probability is p0 and its IRLS weight s = p0 (1 - p0), so with X = [1, WOE inputs]

    w1 = w0 + (s X'X + n ridge D)^-1 (X'y - p0 X'1),    D = diag(0, 1, ..., 1)

(the ridge term has no gradient at w0, whose slopes are zero). X'X and X'y are all it needs,
and over binned inputs both are sums of contingency tables: what the label party can get
without seeing a row of the feature party (`label_party`).

The step's slopes are C^-1 d (C the inputs' covariance, d the difference of their means
between bads and goods): the direction of Fisher's linear discriminant, so the ranking (AUC)
of the discriminant, but too flat and centred on z0, which overstates the mean PD (measured:
0.267 against a bad rate of 0.203, docs/BENCHMARKS.md). `calibration = "lda"` (the default)
takes the discriminant's own scale and intercept, from the same X'X and X'y: with the
within-class covariance W = C - s d d' (Sherman-Morrison),

    slopes  b = W^-1 d = w / (1 - s d'w),   intercept  z0 - b'(m + (1 - 2 p0) d / 2)

(m the inputs' means), the logistic model a shared-covariance normal mixture implies; it moves
no ranking and learns nothing more. `"newton"` keeps the raw step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from jointcredit.data.schema import Schema
from jointcredit.models.binning import OTHER, BinCounts, BinningSpec, CategoricalBins, NumericBins
from jointcredit.models.binning.classing import merge_map
from jointcredit.models.binning.encoding import WoeFeature, woe_features
from jointcredit.models.binning.table import Classing, classify
from jointcredit.models.scorecard import Attribute, PointsTable, ScoreScale

# Per row: n * RIDGE on the slopes' diagonal, against a singular X'X (a feature in one bin
# has an all-zero column); s is at least ~1e-4 for any usable bad rate, so it moves a
# coefficient by under 1e-4 of itself.
RIDGE = 1e-8
Calibration = Literal["lda", "newton"]


@dataclass(frozen=True)
class PlatformFeature:
    """A feature party's feature as the label party keeps it: its fine code -> coarse code
    (`merge`) and the WOE input of each coarse code; never an edge or a level."""

    woe: WoeFeature  # its `bins` stand in for the feature party's (codes only)
    merge: np.ndarray

    @property
    def name(self) -> str:
        return self.woe.name

    @property
    def fine_values(self) -> np.ndarray:
        """The model input of each fine code."""
        out: np.ndarray = self.woe.values[self.merge]
        return out


@dataclass(frozen=True)
class VerticalScorecard:
    intercept: float
    weights: np.ndarray  # per feature: the label party's, then the feature party's
    own: tuple[WoeFeature, ...]
    platform: tuple[PlatformFeature, ...]
    points: PointsTable

    def own_codes(self, frame: pd.DataFrame) -> np.ndarray:
        """The label party's coarse codes of rows of its features."""
        bins = BinningSpec(features=[f.bins for f in self.own])
        return bins.codes(frame).astype(np.int64)

    def logit(self, own_codes: np.ndarray, platform_coarse: np.ndarray) -> np.ndarray:
        """Log-odds of rows: the label party's coarse codes and the feature party's (what it
        answers, through its copy of the merge maps)."""
        columns = [f.values[own_codes[:, a]] for a, f in enumerate(self.own)]
        columns += [f.woe.values[platform_coarse[:, j]] for j, f in enumerate(self.platform)]
        x = np.column_stack(columns) if columns else np.zeros((len(own_codes), 0))
        out: np.ndarray = self.intercept + x @ self.weights
        return out


def stand_in_bins(columns: Sequence[tuple[str, bool, int]], schema: Schema) -> BinningSpec:
    """Fine bins with the feature party's codes and nothing else, for the project's classing:
    per (name, categorical, regular bins) numeric edges 1 .. regular - 1 (classing reads only
    their order) and the schema's special values, or one stand-in level per category."""
    out: list[NumericBins | CategoricalBins] = []
    for name, categorical, regular in columns:
        if categorical:
            groups = [[f"{i}"] for i in range(regular - 1)] + [[OTHER]]
            out.append(CategoricalBins(name=name, groups=groups))
        else:
            edges = [float(i) for i in range(1, regular)]
            special = list(schema.features[name].special)
            out.append(NumericBins(name=name, edges=edges, special=special))
    return BinningSpec(features=out)


def platform_features(
    fine: BinningSpec, counts: BinCounts, schema: Schema, classing: Classing
) -> tuple[PlatformFeature, ...]:
    """Coarse classing and WOE inputs of the feature party's fine bins from good/bad counts
    per fine bin (the same rules as the horizontal scorecard's)."""
    table = classify(fine, counts, schema, classing)
    return tuple(
        PlatformFeature(woe, merge_map(f, c))
        for woe, f, c in zip(woe_features(table), fine.features, table.bins.features, strict=True)
    )


def one_step(
    gram: np.ndarray, xty: np.ndarray, bads: int, ridge: float = RIDGE
) -> tuple[float, np.ndarray]:
    """(intercept, slopes) of the module docstring's step; `gram` = X'X with the intercept's
    column first (so gram[0, 0] = n and gram[:, 0] = X'1), `xty` = X'y."""
    n = round(float(gram[0, 0]))
    m = len(xty)
    if gram.shape != (m, m) or n < 2 or not 0 < bads < n:
        raise ValueError("need both classes among the rows and a square X'X matching X'y")
    p0 = bads / n
    s = p0 * (1 - p0)
    hessian = s * gram + n * ridge * np.diag(np.r_[0.0, np.ones(m - 1)])
    step = np.linalg.solve(hessian, xty - p0 * gram[:, 0])
    return math.log(p0 / (1 - p0)) + float(step[0]), step[1:]


def solve(
    gram: np.ndarray,
    xty: np.ndarray,
    bads: int,
    *,
    ridge: float = RIDGE,
    calibration: Calibration = "lda",
) -> tuple[float, np.ndarray]:
    """(intercept, slopes): `one_step`, rescaled as the discriminant (module docstring) under
    `calibration = "lda"`."""
    intercept, w = one_step(gram, xty, bads, ridge)
    if calibration == "newton":
        return intercept, w
    n = float(gram[0, 0])
    p0 = bads / n
    mean = gram[1:, 0] / n
    cov_y = xty[1:] / n - p0 * mean  # cov(x, y) = s d
    flat = 1.0 - float(cov_y @ w)  # 1 - s d'w: 0 only when some input separates the classes
    if not flat > 1e-9:
        raise ValueError("the classes are separated by the inputs: no discriminant scale")
    slopes = w / flat
    d = cov_y / (p0 * (1 - p0))
    return math.log(p0 / (1 - p0)) - float(slopes @ (mean + (1 - 2 * p0) * d / 2)), slopes


def platform_labels(bins: NumericBins | CategoricalBins) -> list[str]:
    """A feature party's coarse bins as the label party names them: `bin c` for regular ones
    (it has no thresholds or levels), special values and missing as the schema says."""
    labels = bins.labels()
    return [f"bin {c}" for c in range(bins.regular)] + labels[bins.regular :]


def scorecard(
    intercept: float,
    weights: np.ndarray,
    own: Sequence[WoeFeature],
    platform: Sequence[PlatformFeature],
    scale: ScoreScale,
) -> VerticalScorecard:
    """The fit as a points table on `scale` (`models.scorecard.PointsTable`'s convention:
    base points plus one attribute's points per feature, -pdo/ln2 * w_j * x_j each)."""
    factor = scale.pdo / math.log(2)
    features = [*own, *(p.woe for p in platform)]
    attributes: list[Attribute] = []
    for j, f in enumerate(features):
        labels = f.bins.labels() if j < len(own) else platform_labels(f.bins)
        attributes += [
            Attribute(
                feature=f.name,
                code=c,
                attribute=labels[c],
                woe=f.woe[c],
                points=float(-factor * weights[j] * f.values[c]),
            )
            for c in range(f.bins.n_bins)
        ]
    base = scale.base_score - factor * (math.log(scale.base_odds) + intercept)
    table = PointsTable(scale=scale, base_points=float(base), attributes=attributes)
    return VerticalScorecard(intercept, np.asarray(weights), tuple(own), tuple(platform), table)
