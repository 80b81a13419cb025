"""What an institution reveals for the binning rounds of a model on agreed bins: its own
training values counted over the agreed fine grid, then its good/bad rows per agreed bin
(`jointcredit.models.binning`). Plain, each is a signed reply; under `secagg`, one masked
vector of a SecAgg+ round, so the coordinator learns only the federation's sum."""

from __future__ import annotations

from jointcredit.client.data import NodeData
from jointcredit.federation import protocol
from jointcredit.models.binning import (
    BinCounts,
    BinningSpec,
    GridHistogram,
    count_bins,
    grid_histogram,
)


def histogram(node: NodeData, digits: int) -> GridHistogram:
    return grid_histogram(node.data.train.x, node.schema, digits)


def counts(node: NodeData, bins_json: str) -> BinCounts:
    bins = BinningSpec.model_validate_json(bins_json)
    if bins.names != list(node.schema.features):
        raise protocol.ProtocolError("the bins asked about are not this node's schema features")
    return count_bins(node.data.train.x, node.data.train.y, bins)
