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
from logging import INFO
from typing import TypeVar

from flwr.app import Message, RecordDict
from flwr.common.logger import log

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
from jointcredit.models.preprocessing import CategoricalFeature, PreprocessingSpec
from jointcredit.server.errors import FederationError
from jointcredit.server.grid import InstitutionGrid, institution_of

T = TypeVar("T")


def agree_bins(
    grid: InstitutionGrid,
    nodes: list[int],
    settings: RunSettings,
    schema: Schema,
    spec: PreprocessingSpec,
    *,
    max_bins: int,
    digits: int = GRID_DIGITS,
) -> BinningSpec:
    """Fine classing (`query.bin_grid`): the federation's fine bins, numeric edges from the
    summed histograms, categorical levels from the agreed vocabularies (`spec`)."""
    query = BinGridQuery(grid_digits=digits)

    def read(payload: str) -> GridHistogram:
        histogram = GridHistogram.model_validate_json(payload)
        histogram.check(schema, digits)
        return histogram

    histograms = _ask(
        grid,
        nodes,
        settings,
        lambda: protocol.bin_grid_query(query),
        protocol.BIN_GRID_QUERY,
        "histogram",
        read,
    )
    vocabularies = {
        f.name: f.categories for f in spec.features if isinstance(f, CategoricalFeature)
    }
    return fine_bins(merge_histograms(histograms), schema, vocabularies, max_bins=max_bins)


def agree_binning(
    grid: InstitutionGrid,
    nodes: list[int],
    settings: RunSettings,
    schema: Schema,
    spec: PreprocessingSpec,
) -> BinningTable:
    """Fine bins, the federation's counts on them (`query.bin_counts`), coarse classing and
    the IV table."""
    fine = agree_bins(grid, nodes, settings, schema, spec, max_bins=settings.fine_bins)
    query = BinCountsQuery(bins=fine.model_dump_json())

    def read(payload: str) -> BinCounts:
        counts = BinCounts.model_validate_json(payload)
        counts.check(fine)
        return counts

    counts = _ask(
        grid,
        nodes,
        settings,
        lambda: protocol.bin_counts_query(query),
        protocol.BIN_COUNTS_QUERY,
        "bin counts",
        read,
    )
    classing = Classing(
        grid_digits=GRID_DIGITS, fine_bins=settings.fine_bins, min_bin_share=settings.min_bin_share
    )
    table = classify(fine, add_counts(counts), schema, classing)
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
    replies = list(grid.send_and_receive(messages, timeout=settings.round_timeout))
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
