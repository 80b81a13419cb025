"""Scoring kernels for the service: probability of default and why, each model feature's push
toward default in log-odds, for a batch of preprocessed rows.

Each model family brings its own kernel (`jointcredit.models.learners`): exact for the logistic
scorecard, integrated gradients for the MLP. The reference point is the portfolio-average
applicant (an all-zero preprocessed row).
"""

from __future__ import annotations

from torch import nn

from jointcredit.models.learners import FeatureColumns, Kernel, feature_columns, learner
from jointcredit.models.learners.logistic import LinearKernel
from jointcredit.models.learners.mlp import GradientKernel


def kernel(model: nn.Module, kind: str, columns: list[FeatureColumns]) -> Kernel:
    return learner(kind).kernel(model, columns)


__all__ = [
    "FeatureColumns",
    "GradientKernel",
    "Kernel",
    "LinearKernel",
    "feature_columns",
    "kernel",
]
