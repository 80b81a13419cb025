"""Probability of default to a 350-950 score, with points-to-double-odds (PDO) scaling.

    score = base_score + (pdo / ln 2) * ln(odds / base_odds),   odds = (1 - PD) / PD

With the defaults, good:bad odds of 9:1 (PD 10 %) score 660 and every doubling of the odds adds
50 points: PD 5 % -> 714, PD 1 % -> 819, PD 20 % -> 602, PD 50 % -> 502. Scores are clipped to
[350, 950] and rounded to whole points.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator


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
