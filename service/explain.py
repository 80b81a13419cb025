"""Scoring kernels for the service: probability of default and why, each model feature's push
toward default in log-odds, for a batch of model inputs (preprocessed rows; bin codes for
trees).

Each model family brings its own kernel (`jointcredit.models.learners`): exact for the logistic
scorecard, points lost against the feature's best attribute for the binned scorecard,
integrated gradients for the MLP, exact interventional TreeSHAP for gradient-boosted trees.
The reference point is the portfolio-average applicant: an all-zero preprocessed row, or for
trees the bin codes of `reference` (the average applicant in the data's units,
service/applicants.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from jointcredit.models.artifact import ScoringModel
from jointcredit.models.learners import FeatureColumns, Kernel, feature_columns, learner
from jointcredit.models.learners.gbdt import TreeShapKernel
from jointcredit.models.learners.logistic import LinearKernel
from jointcredit.models.learners.mlp import GradientKernel


def kernel(model: nn.Module, kind: str, columns: list[FeatureColumns]) -> Kernel:
    return learner(kind).kernel(model, columns)


def model_kernel(model: ScoringModel, reference: Mapping[str, Any]) -> Kernel:
    """The kernel of a loaded artifact; `reference`: the portfolio-average applicant, which
    trees explain against (the other families' reference is the all-zero row)."""
    ref = None if model.bins is None else model.inputs_record(reference)
    return learner(model.card.architecture.kind).kernel(model.model, model.columns(), ref)


__all__ = [
    "FeatureColumns",
    "GradientKernel",
    "Kernel",
    "LinearKernel",
    "TreeShapKernel",
    "feature_columns",
    "kernel",
    "model_kernel",
]
