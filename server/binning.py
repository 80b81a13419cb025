"""Agree the bins with the institutions before training (two Flower query rounds), for models
that read agreed bins (the binned scorecard).

    query.bin_grid    each institution: its numeric values counted over the agreed fine grid
                      -> the coordinator adds the histograms up and puts the fine edges at
                         the merged quantiles (up to `fine-bins` per feature)
    query.bin_counts  each institution: its good/bad rows per fine bin
                      -> the coordinator adds the counts up, classes them coarsely (minimum
                         share, monotone WOE where the schema asks) and computes WOE and IV

Every reply is signed and verified by `InstitutionGrid` like any other; every institution
that joined must answer both (a missing, failed, rejected or malformed answer stops the run,
naming the institution), so the bins and their counts cover exactly the federation that
trains on them. The steps are `jointcredit.models.binning`'s, the same that the centralized
twin runs on pooled rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from logging import INFO
from typing import TypeVar

import numpy as np
from flwr.app import Context, Message, RecordDict
from flwr.common.logger import log
from flwr.common.typing import Scalar
from flwr.serverapp import Grid

from jointcredit.data.schema import Schema
from jointcredit.federation import protocol
from jointcredit.federation.protocol import BinCountsQuery, BinGridQuery
from jointcredit.federation.settings import RunSettings
from jointcredit.models.binning import (
    GRID_DIGITS,
    BinCounts,
    BinningSpec,
    BinningTable,
    Classing,
    GridHistogram,
    add_counts,
    classify,
    fine_bins,
    merge_histograms,
)
from jointcredit.models.binning.counts import counts_from_vector
from jointcredit.models.binning.grid import histogram_from_vector, histogram_length
from jointcredit.models.preprocessing import (
    CategoricalFeature,
    InstitutionSummary,
    PreprocessingSpec,
)
from jointcredit.server.errors import FederationError
from jointcredit.server.grid import InstitutionGrid, institution_of
from jointcredit.server.secagg import COUNT_RANGE, secure_sum

T = TypeVar("T")
# Under `secagg`: the federation's sum of one vector of counts per institution, given the
# vector's length and the SecAgg+ round's fit config (`jointcredit.server.secagg.secure_sum`).
SecureSum = Callable[[int, dict[str, Scalar]], np.ndarray]


@dataclass(frozen=True)
class Binning:
    """The coordinator's side of the binning rounds, with every institution that joined:
    each answer a signed reply, or under `secagg` (`secure`) one masked vector each, of
    which the coordinator learns only the sum."""

    grid: InstitutionGrid
    nodes: list[int]
    settings: RunSettings
    schema: Schema
    secure: SecureSum | None = None

    def histogram(self, digits: int) -> GridHistogram:
        """The federation's histogram over the fine grid (`query.bin_grid`)."""
        query = BinGridQuery(grid_digits=digits)
        if self.secure is not None:
            total = self.secure(histogram_length(self.schema, digits), dict(query.values()))
            return histogram_from_vector(total, self.schema, digits)

        def read(payload: str) -> GridHistogram:
            histogram = GridHistogram.model_validate_json(payload)
            histogram.check(self.schema, digits)
            return histogram

        content = lambda: protocol.bin_grid_query(query)  # noqa: E731
        histograms = self._ask(content, protocol.BIN_GRID_QUERY, "histogram", read)
        return merge_histograms(histograms)

    def counts(self, bins: BinningSpec) -> BinCounts:
        """The federation's good/bad rows per bin (`query.bin_counts`)."""
        query = BinCountsQuery(bins=bins.to_json())
        if self.secure is not None:
            length = 2 * sum(f.n_bins for f in bins.features)
            return counts_from_vector(self.secure(length, dict(query.values())), bins)

        def read(payload: str) -> BinCounts:
            counts = BinCounts.model_validate_json(payload)
            counts.check(bins)
            return counts

        content = lambda: protocol.bin_counts_query(query)  # noqa: E731
        return add_counts(self._ask(content, protocol.BIN_COUNTS_QUERY, "bin counts", read))

    def _ask(
        self,
        content: Callable[[], RecordDict],
        message_type: str,
        what: str,
        read: Callable[[str], T],
    ) -> list[T]:
        return _ask(self.grid, self.nodes, self.settings, content, message_type, what, read)


def agree_bins(
    binning: Binning, spec: PreprocessingSpec, *, max_bins: int, digits: int = GRID_DIGITS
) -> tuple[BinningSpec, GridHistogram]:
    """Fine classing: the federation's fine bins, numeric edges from the summed histograms,
    categorical levels from the agreed vocabularies (`spec`); and the summed histogram."""
    vocabularies = {
        f.name: f.categories for f in spec.features if isinstance(f, CategoricalFeature)
    }
    histogram = binning.histogram(digits)
    return fine_bins(histogram, binning.schema, vocabularies, max_bins=max_bins), histogram


def agree_binning(binning: Binning, spec: PreprocessingSpec) -> BinningTable:
    """Fine bins, the federation's counts on them, coarse classing and the IV table, with
    the trimmed span of the training values (from the same summed histogram)."""
    s = binning.settings
    fine, histogram = agree_bins(binning, spec, max_bins=s.fine_bins)
    classing = Classing(fine_bins=s.fine_bins, min_bin_share=s.min_bin_share)
    table = classify(fine, binning.counts(fine), binning.schema, classing, histogram)
    log(
        INFO,
        "Agreed bins: %s",
        ", ".join(f"{f.name} {len(f.bins)} (IV {f.iv:.3f})" for f in table.features),
    )
    return table


def _ask(
    grid: InstitutionGrid,
    nodes: list[int],
    settings: RunSettings,
    content: Callable[[], RecordDict],
    message_type: str,
    what: str,
    read: Callable[[str], T],
) -> list[T]:
    """Send one query to every node; every one must answer, verified and readable. Answers
    in institution order."""
    messages = [Message(content(), dst_node_id=n, message_type=message_type) for n in nodes]
    replies = list(grid.send_and_receive(messages, timeout=settings.join_seconds))
    exchange = grid.exchanges[-1]
    problems = {**exchange.errors, **exchange.rejected}
    if problems or len(replies) < len(nodes):
        detail = "; ".join(f"{i}: {e}" for i, e in sorted(problems.items())) or "no replies"
        raise FederationError(f"federated binning ({what}) failed: {detail}")
    out: list[T] = []
    for reply in replies:  # ordered by institution by the grid
        inst = institution_of(reply, grid.node_institution)
        try:
            out.append(read(protocol.parse_binning_reply(reply.content).payload))
        except ValueError as exc:
            raise FederationError(f"{inst}: unreadable {what}: {exc}") from exc
    return out


def binning_rounds(
    grid: Grid,
    igrid: InstitutionGrid,
    context: Context,
    settings: RunSettings,
    schema: Schema,
    node_inst: dict[int, str],
    summaries: list[InstitutionSummary],
) -> tuple[Binning, InstitutionGrid | None]:
    """The binning rounds' counterpart, with the verified institutions (the ones that
    train), and under `secagg` the grid its SecAgg+ sums run on (each round is one sum)."""
    nodes = sorted(node_inst)
    if settings.privacy != "secagg":
        return Binning(igrid, nodes, settings, schema), None
    if max(summary.rows for summary in summaries) >= COUNT_RANGE:
        raise FederationError(
            f"privacy = secagg sums binning counts below {COUNT_RANGE} per institution; an "
            "institution has more training rows"
        )
    # A grid of its own: SecAgg+ rounds are train messages, which the training's records
    # (rounds, the manifest's updates) must not count.
    sum_grid = InstitutionGrid(grid, igrid.verifier, settings.min_valid_fraction)
    secure = partial(secure_sum, sum_grid, context, settings, n_nodes=len(nodes))
    return Binning(igrid, nodes, settings, schema, secure), sum_grid
