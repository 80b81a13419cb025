"""Gradient-boosted trees (`jointcredit.models.trees`) as a model family.

Trees are not trained by local steps on weights: institutions send gradient and hessian
histograms per tree level (`exchange = "histograms"`) and the coordinator grows the trees
(`jointcredit.server.trees`). What this family shares with the others is how a finished
ensemble is stored and scored: `TreeModule` carries it as buffers (the ensemble's arrays,
so the artifact's weights.npz holds exactly `TreeEnsemble.to_arrays()`) and scores a
(rows, features) matrix of bin codes. The eligibility service explains its scores by
TreeSHAP (`TreeShapKernel`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from jointcredit.data.schema import Schema
from jointcredit.federation.settings import RunSettings
from jointcredit.models.learners.base import (
    Architecture,
    FeatureColumns,
    Learner,
    grouping,
    sigmoid,
)
from jointcredit.models.trees import TreeEnsemble, TreeParams
from jointcredit.models.trees.shapley import ReferenceShapley

MONOTONE = {"none": 0, "increasing": 1, "decreasing": -1}


def tree_params(settings: RunSettings, schema: Schema, names: list[str]) -> TreeParams:
    """A run's boosting parameters for trees over the features `names`; monotone
    constraints from the schema."""
    monotone = tuple(MONOTONE[schema.features[name].monotone] for name in names)
    return TreeParams(
        n_trees=settings.trees,
        max_depth=settings.max_depth,
        learning_rate=settings.tree_learning_rate,
        reg_lambda=settings.reg_lambda,
        gamma=settings.min_split_loss,
        min_child_weight=settings.min_child_weight,
        monotone=monotone if any(monotone) else (),
    )


class TreeModule(nn.Module):
    """A tree ensemble behind the model interface: input bin codes, output log-odds."""

    def __init__(self, ensemble: TreeEnsemble) -> None:
        super().__init__()
        self.ensemble = ensemble
        for name, array in ensemble.to_arrays().items():
            self.register_buffer(name, torch.from_numpy(np.ascontiguousarray(array)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        codes = x.detach().cpu().numpy().astype(np.int64)
        return torch.from_numpy(self.ensemble.margin(codes))


class TreeShapKernel:
    """PD and each feature's exact TreeSHAP contribution, interventional, with the one
    reference applicant as the background (`ReferenceShapley`, held equal to
    `shap.TreeExplainer` and to exact Shapley enumeration by the tests): the Shapley values
    of v(S) = log-odds of the applicant's codes on S and the reference's elsewhere. They add
    up to the applicant's log-odds minus the reference's, and a feature in the same bin as
    the reference's gets exactly 0, as the other families' pushes from the
    portfolio-average applicant do."""

    def __init__(
        self, ensemble: TreeEnsemble, columns: list[FeatureColumns], reference: np.ndarray
    ) -> None:
        ref = np.asarray(reference).reshape(1, -1).astype(np.int64)
        if ref.shape[1] != ensemble.n_features:
            raise ValueError(
                f"a reference of {ref.shape[1]} codes for {ensemble.n_features} features"
            )
        self.ensemble = ensemble
        self.reference = ref
        self.g = grouping(columns)
        self.shapley = ReferenceShapley(ensemble, ref[0])

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        codes = x.astype(np.int64)
        pd_ = sigmoid(self.ensemble.margin(codes))
        if not len(codes):
            return pd_, np.zeros((0, self.g.shape[1]))
        contributions: np.ndarray = self.shapley(codes) @ self.g
        return pd_, contributions


class GBDTLearner(Learner):
    kind = "gbdt"
    exchange = "histograms"

    def architecture(self, n_features: int) -> Architecture:
        """`n_features`: the features the trees split on (one bin code each)."""
        return Architecture(kind=self.kind, n_features=n_features)

    def module(self, arch: Architecture) -> nn.Module:
        """No trees yet: the base margin 0 over `arch.n_features` features without a
        missing code."""
        return TreeModule(TreeEnsemble(0.0, (-1,) * arch.n_features, ()))

    def from_state(self, arch: Architecture, state: dict[str, np.ndarray]) -> nn.Module:
        ensemble = TreeEnsemble.from_arrays(state)
        if ensemble.n_features != arch.n_features:
            raise ValueError(
                f"an ensemble over {ensemble.n_features} features, the architecture says "
                f"{arch.n_features}"
            )
        return TreeModule(ensemble)

    def kernel(
        self, model: nn.Module, columns: list[FeatureColumns], reference: np.ndarray | None = None
    ) -> TreeShapKernel:
        if not isinstance(model, TreeModule):
            raise TypeError(f"the gbdt kernel scores a TreeModule, not {type(model).__name__}")
        if reference is None:
            raise ValueError("tree reasons need the reference applicant's bin codes")
        return TreeShapKernel(model.ensemble, columns, reference)
