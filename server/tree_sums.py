"""How the coordinator gets the sum of one tree level's histograms from every institution.

`PlainSums`: one `train.histograms` message each, every reply signed and verified, summed in
institution order. The coordinator sees each institution's histograms.

`SecureSums` (`privacy = secagg`): one SecAgg+ round per level (`jointcredit.server.secagg.
secure_sum`, on a grid of its own) whose fit config is the level's request; each institution
masks its histograms written as fixed-point digits (`jointcredit.federation.fixed_point`) and
the coordinator learns only the federation's sum, rebuilt in float64. Every stage reply is
signed and verified as for the binning sums, the masked vector bound to its level's server
round. Every institution must be in every sum (a dropout fails the run; without secagg a tree
goes on without the institutions that did not answer its first level: `PlainSums`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from flwr.app import Context, Message, MessageType
from flwr.common.typing import Scalar
from flwr.serverapp import Grid

from jointcredit.federation import fixed_point, protocol
from jointcredit.federation.metrics import SecAgg
from jointcredit.federation.protocol import HistogramMetrics, TrainMetrics, TreeLevelMessage
from jointcredit.federation.settings import RunSettings
from jointcredit.models.trees.exchange import histograms_of
from jointcredit.server.errors import FederationError
from jointcredit.server.grid import Exchange, InstitutionGrid, RoundFailed
from jointcredit.server.secagg import (
    COUNT_RANGE,
    SIGNED_STAGES,
    secure_sum,
    shares_and_threshold,
)

# The federation's sum of one whole-number vector per institution, given the vector's length
# and the SecAgg+ round's fit config (`jointcredit.server.secagg.secure_sum`).
SecureSum = Callable[[int, dict[str, Scalar]], np.ndarray]


@dataclass(frozen=True)
class LevelSum:
    """One level's summed histograms and each institution's reported work (seconds)."""

    total: np.ndarray
    work: list[float]


@dataclass
class PlainSums:
    """A tree is grown by the institutions that answer its first level (at least the grid's
    quorum, else the run stops): each later level of that tree asks them only, and needs
    every one of them, since their rows are in the parent histograms a sibling is derived
    from. The others still get the finished tree with the next tree's first level."""

    grid: InstitutionGrid
    nodes: list[int]
    timeout: float
    message_type: str = protocol.HISTOGRAMS_TRAIN
    growers: list[int] = field(default_factory=list)  # the current tree's institutions

    def level(self, message: TreeLevelMessage, shape: tuple[int, ...]) -> LevelSum:
        content = message.to_content()
        first = message.config.level == 0
        asked = self.nodes if first else self.growers
        out = [Message(content, dst_node_id=n, message_type=self.message_type) for n in asked]
        replies = list(self.grid.send_and_receive(out, timeout=self.timeout))
        ex = self.grid.exchanges[-1]
        valid = [r for r in replies if not r.has_error()]
        if first:
            _require_quorum(ex, len(valid), self.grid.quorum(len(asked)), message.config.tree)
            self.growers = sorted(r.metadata.src_node_id for r in valid)
        else:
            _require_all(ex, len(valid), len(asked))
        total = np.zeros(shape)
        work: list[float] = []
        for r in valid:
            try:
                total += histograms_of(protocol.histogram_arrays(r.content), shape)
                work.append(HistogramMetrics.parse(protocol.numbers(r.content)).histogram_seconds)
            except protocol.ProtocolError as exc:
                raise FederationError(f"tree level {ex.server_round}: {exc}") from exc
        return LevelSum(total, work)


@dataclass
class SecureSums:
    grid: InstitutionGrid  # the level sums' own grid: its exchanges are theirs only
    nodes: list[int]
    secure: SecureSum
    message_type: str = MessageType.TRAIN
    summed: dict[int, int] = field(default_factory=dict)  # level -> institutions in its sum

    def record(self, settings: RunSettings) -> SecAgg:
        """What metrics.json says of the level sums."""
        shares, threshold = shares_and_threshold(settings, len(self.nodes))
        return SecAgg(
            num_shares=shares,
            reconstruction_threshold=threshold,
            clipping_range=float(COUNT_RANGE),
            max_weight=1,
            institutions_aggregated=dict(self.summed),
            signed=SIGNED_STAGES,
        )

    def level(self, message: TreeLevelMessage, shape: tuple[int, ...]) -> LevelSum:
        size = int(np.prod(shape))
        first = len(self.grid.exchanges)
        digits = self.secure(fixed_point.DIGITS * size, protocol.tree_level_sum_config(message))
        total = fixed_point.decode(digits.reshape(fixed_point.DIGITS, size), shape)
        # `secure` fails the run unless every institution is in the sum.
        self.summed[message.config.server_round] = len(self.nodes)
        stages = self.grid.exchanges[first:]
        for ex in stages:
            # Only the masked-vector stage carries its round; the key-sharing stages before it
            # and the unmasking after it are the same level's.
            ex.server_round = message.config.server_round
        work = [
            seconds
            for ex in stages
            for values in ex.metrics.values()
            if values  # the key-sharing stages report nothing
            and (seconds := TrainMetrics.parse(values).histogram_seconds) is not None
        ]
        return LevelSum(total, work)


def _require_quorum(ex: Exchange, valid: int, needed: int, tree: int) -> None:
    if valid >= needed:
        return
    problems = {**ex.errors, **ex.rejected}
    detail = "; ".join(f"{i}: {e}" for i, e in sorted(problems.items())) or "no replies"
    replied = ", ".join(sorted(ex.metrics)) or "nobody"
    raise RoundFailed(
        f"tree {tree + 1} (level {ex.server_round}): {valid} institutions sent histograms, "
        f"{needed} needed; replied: {replied}; dropped: {detail}",
        ex.server_round,
    )


def _require_all(ex: Exchange, valid: int, expected: int) -> None:
    problems = {**ex.errors, **ex.rejected}
    if problems or valid != expected:
        detail = "; ".join(f"{i}: {e}" for i, e in sorted(problems.items())) or "no replies"
        raise FederationError(
            f"tree level {ex.server_round}: {valid} of the {expected} institutions growing "
            f"this tree sent histograms, and every one is needed ({detail})"
        )


def secure_sums(
    grid: Grid,
    igrid: InstitutionGrid,
    context: Context,
    settings: RunSettings,
    nodes: list[int],
    rows: int,
) -> SecureSums:
    """The SecAgg+ level sums for the institutions `nodes`, training on `rows` rows in all."""
    # A gradient lies in (-1, 1) and a hessian in (0, 1/4]: no sum over `rows` rows exceeds it.
    if rows >= fixed_point.CAPACITY:
        raise FederationError(
            f"privacy = secagg sums tree histograms below {fixed_point.CAPACITY:g} in "
            f"magnitude; the federation trains on {rows} rows"
        )
    # Its own grid: SecAgg+ rounds are train messages, kept apart from the other exchanges.
    level_grid = InstitutionGrid(grid, igrid.verifier, settings.min_valid_fraction)
    secure = partial(secure_sum, level_grid, context, settings, n_nodes=len(nodes))
    return SecureSums(level_grid, nodes, secure)
