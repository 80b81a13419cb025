"""Probability of default to a 350-950 score, with points-to-double-odds (PDO) scaling, and the
binned scorecard's points table on that scale.

    score = base_score + (pdo / ln 2) * ln(odds / base_odds),   odds = (1 - PD) / PD

With the defaults, good:bad odds of 9:1 (PD 10 %) score 660 and every doubling of the odds adds
50 points: PD 5 % -> 714, PD 1 % -> 819, PD 20 % -> 602, PD 50 % -> 502. Scores are clipped to
[350, 950] and rounded to whole points.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator

from jointcredit.models.binning.encoding import WoeFeature, woe_features
from jointcredit.models.binning.table import BinningTable
from jointcredit.models.preprocessing import (
    CategoricalFeature,
    NumericFeature,
    PreprocessingSpec,
)


class ScoreScale(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    base_score: float = 660.0
    base_odds: float = 9.0
    pdo: float = 50.0
    min_score: int = 350
    max_score: int = 950

    @model_validator(mode="after")
    def _valid(self) -> ScoreScale:
        if self.pdo <= 0 or self.base_odds <= 0 or self.min_score >= self.max_score:
            raise ValueError("need pdo > 0, base_odds > 0 and min_score < max_score")
        return self

    def score(self, pd_: np.ndarray | float) -> np.ndarray:
        # minimum/maximum rather than np.clip: same values, a fraction of the per-call cost
        # (the service scores one applicant at a time).
        p = np.minimum(np.maximum(np.asarray(pd_, dtype="float64"), 1e-9), 1 - 1e-9)
        raw = self.base_score + self.pdo / np.log(2) * np.log((1 - p) / p / self.base_odds)
        clipped = np.minimum(np.maximum(np.rint(raw), self.min_score), self.max_score)
        out: np.ndarray = clipped.astype(np.int64)
        return out

    def pd_at(self, score: float) -> float:
        """Inverse of `score` (before clipping/rounding): the PD a score stands for."""
        odds = self.base_odds * 2 ** ((score - self.base_score) / self.pdo)
        return float(1 / (1 + odds))


# --------------------------------------------------------------------------- points table
# (the binned scorecard: `--model scorecard`, docs/SCORECARD.md)


class Attribute(BaseModel):
    """One attribute (bin) of one feature and the points it scores."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    feature: str
    code: int
    attribute: str
    woe: float
    points: float


class PointsTable(BaseModel):
    """Base points plus one feature's attribute points per feature: their sum is the score.

    With logit = b + sum_j w_j x_j (x_j the standardised WOE of feature j's bin) and
    factor = pdo / ln 2, the scale's score is
        base_score + factor * ln(odds / base_odds) = base_points + sum_j points_j
    where base_points = base_score - factor * (ln(base_odds) + b) and an attribute's points
    are -factor * w_j * x_j. Rounded and clipped to the scale's range as `ScoreScale.score`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    scale: ScoreScale
    base_points: float
    attributes: list[Attribute]

    def lookup(self, features: list[str]) -> list[np.ndarray]:
        """Per feature (in `features`' order), its points by bin code."""
        out: list[np.ndarray] = []
        for name in features:
            rows = sorted((a.code, a.points) for a in self.attributes if a.feature == name)
            out.append(np.array([p for _, p in rows]))
        return out

    def raw(self, codes: np.ndarray, features: list[str]) -> np.ndarray:
        """Unrounded scores of rows of bin codes (columns: `features`)."""
        total = np.full(len(codes), self.base_points)
        for j, table in enumerate(self.lookup(features)):
            total += table[codes[:, j].astype(np.int64)]
        return total

    def score(self, codes: np.ndarray, features: list[str]) -> np.ndarray:
        s = self.scale
        clipped = np.clip(np.rint(self.raw(codes, features)), s.min_score, s.max_score)
        out: np.ndarray = clipped.astype(np.int64)
        return out

    def to_csv(self) -> str:
        """`scorecard.csv`: the base points, then every attribute (full precision: adding
        them up gives the model's score)."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["feature", "code", "attribute", "woe", "points"])
        writer.writerow(["(base)", "", "base points", "", repr(self.base_points)])
        for a in self.attributes:
            writer.writerow([a.feature, a.code, a.attribute, repr(a.woe), repr(a.points)])
        return buf.getvalue()


def linear_weights(state: Mapping[str, np.ndarray]) -> tuple[np.ndarray, float]:
    """A logistic model's weight vector and intercept from its stored arrays."""
    weight = next(v for k, v in state.items() if k.endswith("weight"))
    bias = next(v for k, v in state.items() if k.endswith("bias"))
    return np.asarray(weight, np.float64).reshape(-1), float(np.asarray(bias).reshape(-1)[0])


def points_table(
    spec: PreprocessingSpec, state: Mapping[str, np.ndarray], scale: ScoreScale
) -> PointsTable:
    """The points table of a logistic model over WOE inputs (one input per feature)."""
    w, b = linear_weights(state)
    factor = scale.pdo / math.log(2)
    attributes: list[Attribute] = []
    for j, f in enumerate(spec.features):
        if not isinstance(f, WoeFeature):
            raise ValueError(f"feature {f.name!r} is not WOE-encoded: no points table")
        labels = f.bins.labels()
        values = f.inputs
        attributes += [
            Attribute(
                feature=f.name,
                code=code,
                attribute=labels[code],
                woe=f.woe[code],
                points=float(-factor * w[j] * values[code]),
            )
            for code in range(f.bins.n_bins)
        ]
    base = scale.base_score - factor * (math.log(scale.base_odds) + b)
    return PointsTable(scale=scale, base_points=float(base), attributes=attributes)


def woe_preprocessing(table: BinningTable) -> PreprocessingSpec:
    """The scorecard's agreed preprocessing: one standardised WOE input per feature."""
    features: list[NumericFeature | CategoricalFeature | WoeFeature] = [*woe_features(table)]
    return PreprocessingSpec(features=features, rows=table.rows)
