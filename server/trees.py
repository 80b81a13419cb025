"""The coordinator's trees phase (model gbdt): grow every tree level by level from the sum of
the institutions' histograms, then have each institution evaluate the ensemble.

Per tree level one exchange (`train.histograms`): the coordinator sends the tree grown so far
and the nodes whose histograms it needs (each institution routes its own rows), every
institution replies with one signed message holding those nodes' gradient and hessian
histograms, and the coordinator sums them (replies ordered by institution), derives each
sibling by subtraction and picks the level's splits (`jointcredit.models.trees.grower`, the
code the central engine runs). Under `secagg` each level's exchange is a SecAgg+ round instead
and the coordinator learns only the federation's sum (`jointcredit.server.tree_sums`).
A tree is grown on the rows of the institutions that answer its first level (at least the
quorum, `min-valid-fraction` and `min-institutions`; those that did not are the tree's
`dropped`); each later level of the tree needs every one of them, since a histogram left out
there would not match the parent histograms its sibling is derived from: a missing, failed or
rejected reply then stops the run, naming the institution. With every institution answering,
the ensemble is the pooled rows'.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from logging import INFO

import numpy as np
from flwr.app import Message, MessageType
from flwr.common.logger import log

from jointcredit.data.frames import Split
from jointcredit.federation.metrics import RoundRecord, TreeTiming
from jointcredit.federation.protocol import (
    ModelMessage,
    RoundConfig,
    TreeLevelConfig,
    TreeLevelMessage,
)
from jointcredit.federation.settings import RunSettings
from jointcredit.models.binning import BinningSpec
from jointcredit.models.metrics import risk_metrics
from jointcredit.models.trees import TreeEnsemble, TreeGrower, TreeParams
from jointcredit.models.trees.bins import layout as bin_layout
from jointcredit.models.trees.ensemble import sigmoid
from jointcredit.models.trees.exchange import ensemble_record, tree_record
from jointcredit.models.trees.tree import EMPTY_ENSEMBLE, Tree, chain_digest
from jointcredit.server.grid import Exchange, InstitutionGrid
from jointcredit.server.report import record_dropped
from jointcredit.server.tree_sums import PlainSums, SecureSums


@dataclass
class TreeRun:
    """What the trees phase produced, with how its time was spent."""

    ensemble: TreeEnsemble
    rounds: list[RoundRecord]
    timing: TreeTiming


@dataclass
class _Clock:
    levels: int = 0
    exchange: float = 0.0  # the level's sum: messages, institutions' work, adding up
    work_max: float = 0.0  # per level, the slowest institution's histogram work, summed
    work_total: float = 0.0  # every institution's histogram work
    coordinator: float = 0.0  # summing, splitting, routing: the coordinator's own work
    level_tree: dict[int, int] = field(default_factory=dict)  # server round -> tree (1-based)


def grow_federated(
    sums: PlainSums | SecureSums,
    bins: BinningSpec,
    params: TreeParams,
    base_margin: float,
    after_tree: Callable[[int, Tree], dict[str, float | None]],
) -> TreeRun:
    """`params.n_trees` trees from the institutions' histograms, each level's summed by `sums`
    (plain or SecAgg+). `after_tree(t, tree)` runs once each tree is finished (1-based t) and
    returns what the round record keeps of it (central evaluation)."""
    layout = bin_layout(bins)
    clock = _Clock()
    trees: list[Tree] = []
    ensemble = EMPTY_ENSEMBLE
    central: dict[int, dict[str, float | None]] = {}
    bins_json, bins_digest = bins.to_json(), bins.digest()
    for t in range(params.n_trees):
        grower = TreeGrower(layout, params)
        while (request := grower.request()) is not None:
            started = time.perf_counter()
            first = clock.levels == 0
            clock.levels += 1
            clock.level_tree[clock.levels] = t + 1
            config = TreeLevelConfig(
                server_round=clock.levels,
                tree=t,
                level=request.level,
                ensemble=ensemble.hex(),
                bins_digest=bins_digest,
                bins=bins_json if first else None,
                base_margin=base_margin if first else None,
            )
            message = TreeLevelMessage(
                config,
                tree_record(request.tree, request.build),
                tree_record(trees[-1]) if trees and request.level == 0 else None,
            )
            shape = (len(request.build), layout.total_bins, 2)
            sent = time.perf_counter()
            level = sums.level(message, shape)
            received = time.perf_counter()
            clock.exchange += received - sent
            clock.work_max += max(level.work, default=0.0)
            clock.work_total += sum(level.work)
            grower.receive(level.total)
            clock.coordinator += (sent - started) + (time.perf_counter() - received)
        tree = grower.tree()
        trees.append(tree)
        ensemble = chain_digest(ensemble, tree)
        central[t + 1] = after_tree(t + 1, tree)
    log(INFO, "Grew %d trees in %d histogram exchanges", len(trees), clock.levels)
    timing = TreeTiming(
        levels=clock.levels,
        exchange_seconds=round(clock.exchange, 3),
        institution_histogram_seconds_max=round(clock.work_max, 3),
        institution_histogram_seconds_total=round(clock.work_total, 3),
        coordinator_seconds=round(clock.coordinator, 3),
    )
    return TreeRun(
        TreeEnsemble(base_margin, layout.missing, tuple(trees)),
        _round_records(sums, clock.level_tree, central),
        timing,
    )


def _round_records(
    sums: PlainSums | SecureSums,
    level_tree: dict[int, int],
    central: dict[int, dict[str, float | None]],
) -> list[RoundRecord]:
    """One record per tree: who sent histograms for all its levels (under secagg: the
    masked vectors), and its evaluation."""
    rounds = {t: RoundRecord(round=t, errors={}, rejected={}, dropped=[]) for t in central}
    for ex in sums.grid.exchanges:
        if ex.message_type != sums.message_type or ex.server_round not in level_tree:
            continue
        rec = rounds[level_tree[ex.server_round]]
        sent = sorted(ex.metrics)
        rec.train_institutions = (
            sent
            if rec.train_institutions is None
            else sorted(set(rec.train_institutions) & set(sent))
        )
        record_dropped(rec, ex)
        rec.rejected.update({f"{ex.message_type}:{i}": e for i, e in ex.rejected.items()})
    for t, values in central.items():
        if values:
            rounds[t].central = values
    return [rounds[t] for t in sorted(rounds)]


class CentralTrees:
    """Simulation only: the ensemble's metrics on the pooled test split after each tree."""

    def __init__(self, pooled: Split | None, bins: BinningSpec, base_margin: float) -> None:
        self.pooled = pooled
        self.codes = None if pooled is None else bins.codes(pooled.x)
        self.missing = np.asarray(bin_layout(bins).missing)
        self.margin = None if pooled is None else np.full(len(pooled.y), base_margin)

    def after(self, tree: Tree) -> dict[str, float | None]:
        if self.pooled is None or self.codes is None or self.margin is None:
            return {}
        self.margin = self.margin + tree.predict(self.codes, self.missing)
        return dict(risk_metrics(self.pooled.y, sigmoid(self.margin)).model_dump())


def evaluate_ensemble(
    grid: InstitutionGrid,
    nodes: list[int],
    ensemble: TreeEnsemble,
    spec_json: str,
    bins: BinningSpec,
    server_round: int,
    settings: RunSettings,
) -> Exchange:
    """Each institution scores its own test split with the final ensemble and, under
    `personal-trees`, with the ensemble plus its own extra trees."""
    config = RoundConfig(
        preprocessing=spec_json,
        server_round=server_round,
        bins=bins.to_json(),
        personal_trees=settings.personal_trees or None,
    )
    content = ModelMessage(ensemble_record(ensemble), config).to_content()
    messages = [Message(content, dst_node_id=n, message_type=MessageType.EVALUATE) for n in nodes]
    list(grid.send_and_receive(messages, timeout=settings.round_timeout))
    return grid.exchanges[-1]
