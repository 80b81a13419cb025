"""The institution's side of the reference round (`query.reference`): its training rows per
score band of the final global model and per feature bin, as counts (`models.reference`).
Rows never leave; the counts are what `server.reference` adds up into the artifact's
reference distribution."""

from __future__ import annotations

import numpy as np

from jointcredit.client import trees
from jointcredit.client.data import NodeData
from jointcredit.federation.protocol import ModelMessage, ReferenceQuery
from jointcredit.federation.settings import RunSettings
from jointcredit.models.binning import BinningSpec
from jointcredit.models.learners import learner
from jointcredit.models.reference import count_rows
from jointcredit.models.scorecard import ScoreScale
from jointcredit.models.training import predict_pd


def reference_counts(
    ins: ModelMessage, query: ReferenceQuery, node: NodeData, settings: RunSettings
) -> np.ndarray:
    """This institution's counts vector for its training rows."""
    bins = BinningSpec.model_validate_json(query.bins)
    if learner(settings.model).exchange == "histograms":
        pd_ = trees.training_pds(ins, node)
    else:
        model, _ = node.model(ins, settings)
        pd_ = predict_pd(model, node.matrix(node.spec(ins), "train"))
    # The artifact's scale (`save_artifact` writes the default one).
    scores = ScoreScale().score(pd_)
    return count_rows(scores, node.data.train.x, bins)
