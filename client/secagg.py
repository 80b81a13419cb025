"""The institution's side of secure aggregation (Flower SecAgg+), for training rounds and, for a
model on agreed bins, the binning rounds (its counts as one masked vector), for trees,
each tree level (its histograms as one masked vector of fixed-point digits), and after
training the fairness counts and the reference counts (one masked vector each).

SecAgg+ exists only on Flower's legacy API: the coordinator's `SecAggPlusWorkflow` drives four
stages (setup, key sharing, masked-vector collection, unmasking), each a train message, and
the client's `secaggplus_mod` answers them, calling a legacy `NumPyClient.fit` at the masking
stage. This module bridges that to our Message API app: the same `local_update` as plain
training, through a NumPyClient; every stage reply names the institution so that the
outermost signing mod signs it (the coordinator verifies each stage reply, masked vector
included, before the workflow uses it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch
from flwr.app import Context, Message
from flwr.client import NumPyClient
from flwr.client.message_handler.message_handler import handle_legacy_message_from_msgtype
from flwr.client.mod import secaggplus_mod
from flwr.common.typing import NDArrays, Scalar

from jointcredit.client import binning, fairness, reference, trees
from jointcredit.client.data import NodeData
from jointcredit.client.update import LocalUpdate
from jointcredit.federation import fixed_point, protocol
from jointcredit.federation.protocol import (
    IDENTITY,
    BinCountsQuery,
    BinGridQuery,
    RoundConfig,
    TrainMetrics,
)
from jointcredit.federation.settings import RunSettings
from jointcredit.models.binning.counts import counts_vector
from jointcredit.models.binning.grid import histogram_vector
from jointcredit.models.learners import architecture, build_model
from jointcredit.models.preprocessing import PreprocessingSpec


class LocalUpdateFn(Protocol):
    def __call__(
        self,
        model: torch.nn.Module,
        spec: PreprocessingSpec,
        settings: RunSettings,
        node: NodeData,
        context: Context,
        *,
        server_round: int,
        mu: float,
    ) -> LocalUpdate: ...


class _Institution(NumPyClient):
    """Legacy view of one institution, for `secaggplus_mod`'s masking stage only."""

    def __init__(
        self, settings: RunSettings, node: NodeData, context: Context, update: LocalUpdateFn
    ) -> None:
        self.settings, self.node, self.ctx, self.update = settings, node, context, update

    def fit(
        self, parameters: NDArrays, config: dict[str, Scalar]
    ) -> tuple[NDArrays, int, dict[str, Scalar]]:
        reference_request = protocol.reference_sum_request(config)
        if reference_request is not None:
            # Weight 1: this institution's reference counts, summed exactly.
            ins, query = reference_request
            counts = reference.reference_counts(ins, query, self.node, self.settings)
            return [counts.astype(np.float64)], 1, dict(TrainMetrics(num_examples=1).values())
        fair = protocol.fairness_sum_request(config)
        if fair is not None:
            # Weight 1: the counts as they are; the coordinator learns only their sum.
            vector = fairness.counts(*fair, self.node, self.settings)
            return [vector.astype(np.float64)], 1, dict(TrainMetrics(num_examples=1).values())
        binning = protocol.binning_sum_request(config)
        if binning is not None:
            # Weight 1 (the coordinator's max_weight): the masked vector is the counts as
            # they are, and the coordinator learns only the federation's sum.
            vector = binning_counts(binning, self.node)
            return [vector.astype(np.float64)], 1, dict(TrainMetrics(num_examples=1).values())
        level = protocol.tree_level_sum_request(config)
        if level is not None:
            # Weight 1 again: the histograms as fixed-point digits, summed exactly.
            hist, work = trees.level_histograms(level, self.ctx, self.node)
            digits = fixed_point.encode(hist).astype(np.float64).ravel()
            reported = TrainMetrics(num_examples=1, histogram_seconds=work.histogram_seconds)
            return [digits], 1, dict(reported.values())
        round_config = RoundConfig.parse(config, "round config")
        if round_config.server_round is None:
            raise protocol.ProtocolError("a SecAgg+ fit message needs its server round")
        spec = PreprocessingSpec.model_validate_json(round_config.preprocessing)
        model = build_model(architecture(self.settings.model, spec.n_outputs))
        names = list(model.state_dict())
        if len(names) != len(parameters):
            raise ValueError(f"expected {len(names)} arrays, got {len(parameters)}")
        model.load_state_dict(
            {n: torch.from_numpy(np.array(a)) for n, a in zip(names, parameters, strict=True)}
        )
        result = self.update(
            model,
            spec,
            self.settings,
            self.node,
            self.ctx,
            server_round=round_config.server_round,
            mu=round_config.proximal_mu or 0.0,
        )
        if result.withheld:
            raise RuntimeError("no update to send: privacy budget spent")
        metrics: dict[str, Scalar] = dict(result.metrics.values())
        arrays: NDArrays = [v.detach().numpy() for v in model.state_dict().values()]
        return arrays, len(self.node.data.train.y), metrics


def binning_counts(asked: BinGridQuery | BinCountsQuery, node: NodeData) -> np.ndarray:
    """This institution's binning counts as one fixed-length vector: its histogram over the
    whole fine grid, or its good/bad rows per agreed bin."""
    if isinstance(asked, BinGridQuery):
        return histogram_vector(binning.histogram(node, asked.grid_digits), node.schema)
    return counts_vector(binning.counts(node, asked.bins))


def secagg_train(
    msg: Message,
    context: Context,
    settings: RunSettings,
    node: NodeData,
    update: LocalUpdateFn,
) -> Message:
    """Answer one SecAgg+ stage message."""

    def legacy_fit(m: Message, c: Context) -> Message:
        client: Callable[[Context], object] = lambda ctx: _Institution(  # noqa: E731
            settings, node, ctx, update
        ).to_client()
        return handle_legacy_message_from_msgtype(client, m, c)  # type: ignore[arg-type]

    reply = secaggplus_mod(msg, context, legacy_fit)
    if reply.has_content():
        reply.content[IDENTITY] = protocol.identity_record(node.institution)
    return reply
