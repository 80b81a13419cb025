"""The logistic scorecard: logit = w . x + b over the agreed (standardised, one-hot) inputs.

Each weight times its input is an exact contribution to the log-odds, so the reason codes are
exact: a feature's push is the sum over its columns, and the pushes add up to the logit minus
the intercept (relative to the portfolio-average applicant).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import nn

from jointcredit.federation.choices import ModelKind
from jointcredit.models.learners.base import (
    Architecture,
    FeatureColumns,
    Learner,
    grouping,
    sigmoid,
)


class LogisticScorecard(nn.Module):
    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(x).squeeze(-1)
        return out


class LinearKernel:
    """Scoring and exact attribution in float64 numpy: for one dot product, torch's per-call
    overhead would dominate a decision's cost."""

    def __init__(self, model: nn.Module, columns: list[FeatureColumns]) -> None:
        params = dict(model.named_parameters())
        weight = next(p for n, p in params.items() if n.endswith("weight"))
        bias = next(p for n, p in params.items() if n.endswith("bias"))
        self.w = weight.detach().double().numpy().reshape(-1)
        self.b = float(bias.detach().double().reshape(-1)[0])
        self.g = grouping(columns)

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        per_column = x.astype(np.float64) * self.w
        return sigmoid(per_column.sum(axis=1) + self.b), per_column @ self.g


class LogisticLearner(Learner):
    kind: ClassVar[ModelKind] = "logreg"
    convex = True

    def architecture(self, n_features: int) -> Architecture:
        return Architecture(kind=self.kind, n_features=n_features)

    def module(self, arch: Architecture) -> nn.Module:
        return LogisticScorecard(arch.n_features)

    def kernel(
        self, model: nn.Module, columns: list[FeatureColumns], reference: np.ndarray | None = None
    ) -> LinearKernel:
        return LinearKernel(model, columns)
