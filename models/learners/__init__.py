"""Model families: one module each (`base` says what a family answers), registered here.

A new family is a `Learner` subclass in its own module and one entry in `LEARNERS` (its kind
must be a `ModelKind` of the run settings and have a recipe in `jointcredit.federation`).
"""

from __future__ import annotations

from torch import nn

from jointcredit.models.learners.base import (
    Architecture,
    FeatureColumns,
    Kernel,
    Learner,
    feature_columns,
)
from jointcredit.models.learners.gbdt import GBDTLearner
from jointcredit.models.learners.logistic import LogisticLearner
from jointcredit.models.learners.mlp import MLPLearner
from jointcredit.models.learners.scorecard import ScorecardLearner

LEARNERS: dict[str, Learner] = {
    learner.kind: learner
    for learner in (LogisticLearner(), MLPLearner(), ScorecardLearner(), GBDTLearner())
}


def learner(kind: str) -> Learner:
    if kind not in LEARNERS:
        raise ValueError(f"no learner for model {kind!r} (known: {', '.join(sorted(LEARNERS))})")
    return LEARNERS[kind]


def architecture(kind: str, n_features: int) -> Architecture:
    return learner(kind).architecture(n_features)


def build_model(arch: Architecture, *, seed: int = 0) -> nn.Module:
    return learner(arch.kind).build(arch, seed=seed)


__all__ = [
    "LEARNERS",
    "Architecture",
    "FeatureColumns",
    "Kernel",
    "Learner",
    "architecture",
    "build_model",
    "feature_columns",
    "learner",
]
