"""The binned scorecard: a logistic regression on each feature's weight of evidence over the
federation's agreed coarse bins, delivered as a points table (`jointcredit.models.scorecard`).

It trains exactly as the logistic learner does (same module, same federated recipe); what
differs is its input (one standardised WOE column per feature, `encoding = "woe"`) and its
reasons. Adverse-action reasons for a points table are the attributes that lost the most
points against the best attribute of their feature: each feature's contribution here is
w * x - min over its attributes of w * x' (in log-odds; points are a fixed multiple), so it is
never negative, and zero for an applicant holding the feature's best attribute.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from jointcredit.models.learners.base import FeatureColumns, sigmoid
from jointcredit.models.learners.logistic import LinearKernel, LogisticLearner


class PointsKernel(LinearKernel):
    def __init__(self, model: nn.Module, columns: list[FeatureColumns]) -> None:
        super().__init__(model, columns)
        # The best attribute's log-odds per feature: the lowest push toward default among the
        # values its input takes (0 for a feature that is not binned: a plain linear push).
        best = np.zeros(len(columns))
        for j, c in enumerate(columns):
            if c.attributes and c.stop == c.start + 1:
                best[j] = min(self.w[c.start] * np.asarray(c.attributes))
        self.best = best

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        per_column = x.astype(np.float64) * self.w
        return sigmoid(per_column.sum(axis=1) + self.b), per_column @ self.g - self.best


class ScorecardLearner(LogisticLearner):
    kind = "scorecard"
    encoding = "woe"

    def kernel(
        self, model: nn.Module, columns: list[FeatureColumns], reference: np.ndarray | None = None
    ) -> PointsKernel:
        return PointsKernel(model, columns)
