"""What an institution reveals to measure fairness after training: which groups of the
schema's protected attributes its test rows hold, then its count vector over the agreed groups
(`jointcredit.models.fairness`: applicants per attribute, group, label and whole score of the
final model). No row and no row's group leaves; under `secagg` the vector is masked and the
coordinator learns only the federation's sum."""

from __future__ import annotations

import json

import numpy as np

from jointcredit.client import trees
from jointcredit.client.data import NodeData
from jointcredit.federation import protocol
from jointcredit.federation.protocol import FairnessCountsQuery, ModelMessage
from jointcredit.federation.settings import RunSettings
from jointcredit.models.fairness import GroupLayout, count_vector, group_values, scores_of
from jointcredit.models.training import predict_pd


def _groups(node: NodeData, protected: list[str]) -> tuple[str, ...]:
    own = node.schema.protected
    if list(own) != protected or node.data.test.groups is None:
        raise protocol.ProtocolError(
            f"fairness asked about {protected}; this node's schema protects {list(own)}"
        )
    return own


def groups(node: NodeData, protected_json: str) -> dict[str, list[str]]:
    protected = _groups(node, json.loads(protected_json))
    assert node.data.test.groups is not None  # checked by _groups
    return group_values(node.data.test.groups, protected)


def counts(
    ins: ModelMessage, query: FairnessCountsQuery, node: NodeData, settings: RunSettings
) -> np.ndarray:
    """This institution's count vector for the final model on its test rows."""
    layout = GroupLayout.model_validate_json(query.layout)
    protected = _groups(node, list(layout.attributes))
    layout.check(protected)
    if settings.model == "gbdt":
        pd_ = trees.evaluation_pds(ins, node, settings)[0]
    else:
        model, _ = node.model(ins, settings)
        pd_ = predict_pd(model, node.matrix(node.spec(ins), "test"))
    test = node.data.test
    assert test.groups is not None  # checked by _groups
    return count_vector(scores_of(pd_), test.y, test.groups, layout)
