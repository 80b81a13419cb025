"""The reference round (`query.reference`), after training: each institution counts its
training rows per score band of the final global model and per feature bin
(`client.reference`); the coordinator adds the verified counts up into the artifact's
`reference.json` (`models.reference`), which a service compares the applicants it scores with
(stability monitoring, docs/GOVERNANCE.md).

Counts only leave a node, as in the binning rounds. A reply that failed, was rejected or does
not hold the agreed number of whole non-negative counts is left out and named in the log; the
reference records whose rows it covers. Under `secagg` the round is one SecAgg+ sum of every
institution's counts vector (`server.secagg.secure_sum`): the coordinator learns the
federation's counts only; a dropout fails the sum, and the artifact then has no reference (the
service reports monitoring unavailable) rather than the run failing after training.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from logging import INFO, WARNING

import numpy as np
from flwr.app import ArrayRecord, Context, Message
from flwr.common.logger import log
from flwr.common.typing import Scalar
from flwr.serverapp import Grid

from jointcredit.federation import protocol
from jointcredit.federation.protocol import ModelMessage, ReferenceQuery, RoundConfig
from jointcredit.federation.settings import RunSettings
from jointcredit.models.binning import BinningSpec
from jointcredit.models.reference import Reference, vector_length
from jointcredit.server.errors import FederationError
from jointcredit.server.grid import Exchange, InstitutionGrid, institution_of
from jointcredit.server.secagg import COUNT_RANGE, secure_sum

# The federation's sum of one counts vector per institution (length, SecAgg+ fit config).
SecureSum = Callable[[int, dict[str, Scalar]], np.ndarray]


def secure_reference(
    grid: Grid,
    igrid: InstitutionGrid,
    context: Context,
    settings: RunSettings,
    n_nodes: int,
    max_rows: int,
) -> tuple[SecureSum | None, InstitutionGrid | None]:
    """Under `secagg`: the secure sum the reference round runs through, on a grid of its own
    (SecAgg+ stages are train messages, which the training's records must not count); None
    otherwise, or when an institution has too many rows for SecAgg+'s exact integer sum."""
    if settings.privacy != "secagg" or max_rows >= COUNT_RANGE:
        return None, None
    sum_grid = InstitutionGrid(grid, igrid.verifier, settings.min_valid_fraction)
    return partial(secure_sum, sum_grid, context, settings, n_nodes=n_nodes), sum_grid


def reference_round(
    grid: InstitutionGrid,
    nodes: list[int],
    arrays: ArrayRecord,
    config: RoundConfig,
    bins: BinningSpec,
    settings: RunSettings,
    secure: SecureSum | None = None,
    institutions: list[str] | None = None,
) -> Reference | None:
    """The federation's reference distribution; None when it cannot be had (no usable
    reply; under `secagg` (`secure`, over `institutions`) a failed sum)."""
    if settings.privacy in ("dp-record", "dp-institution"):
        # Exact counts of training rows would be a release the privacy accounting does not
        # cover: a DP run's artifact carries no reference (monitoring: unavailable).
        log(WARNING, "No reference: %s runs release no exact training-row counts", settings.privacy)
        return None
    query = ReferenceQuery(bins=bins.to_json())
    model = ModelMessage(arrays, config)
    if secure is not None:
        return _secure(secure, model, query, bins, sorted(institutions or []))
    if settings.privacy == "secagg":  # counts must not arrive unmasked
        log(WARNING, "No reference: SecAgg+ sums counts below %d rows a node", COUNT_RANGE)
        return None
    messages = [
        Message(
            protocol.reference_query(model, query),
            dst_node_id=n,
            message_type=protocol.REFERENCE_QUERY,
        )
        for n in nodes
    ]
    replies = list(grid.send_and_receive(messages, timeout=settings.round_timeout))
    return reference_of(replies, grid.exchanges[-1], grid, bins)


def folds_into_final_evaluation(settings: RunSettings) -> bool:
    """Whether the final evaluation can carry the reference query (`protocol.ask_reference`):
    only where its counts travel plain anyway (not under DP: no reference; not under secagg:
    a SecAgg+ sum)."""
    return settings.privacy not in ("dp-record", "dp-institution", "secagg")


def reference_of(
    replies: list[Message], exchange: Exchange, grid: InstitutionGrid, bins: BinningSpec
) -> Reference | None:
    """The reference from an exchange's verified replies (the reference round's, or the final
    evaluation's that carried the query); the exchange's failures are named in the log."""
    length = vector_length(bins)
    total = np.zeros(length, dtype=np.int64)
    covered: list[str] = []
    for reply in replies:
        if reply.has_error():
            continue  # logged below with the exchange's other failures
        inst = institution_of(reply, grid.node_institution)
        try:
            counts = _counts(protocol.parse_reference_reply(reply.content).counts, length)
            # Its own counts must make a reference (every feature counting the same rows):
            # one institution's inconsistent vector is left out, not the whole reference.
            Reference.from_vector(counts, bins, [inst])
        except ValueError as exc:
            log(WARNING, "Reference counts of %s left out: %s", inst, exc)
            continue
        total += counts
        covered.append(inst)
    for inst, reason in sorted({**exchange.errors, **exchange.rejected}.items()):
        log(WARNING, "Reference counts of %s missing: %s", inst, reason)
    if not covered:
        log(WARNING, "No reference counts: the artifact has no reference distribution")
        return None
    reference = Reference.from_vector(total, bins, sorted(covered))
    log(INFO, "Reference distribution: %d training rows of %s", reference.rows, covered)
    return reference


def _secure(
    secure: SecureSum,
    model: ModelMessage,
    query: ReferenceQuery,
    bins: BinningSpec,
    institutions: list[str],
) -> Reference | None:
    try:
        total = secure(vector_length(bins), protocol.reference_sum_config(model, query))
    except FederationError as exc:
        log(WARNING, "No reference distribution: %s", exc)
        return None
    if (total < 0).any() or (total >= COUNT_RANGE * max(len(institutions), 1)).any():
        log(WARNING, "No reference distribution: the secure sum is out of range")
        return None
    try:  # a masked input can make the sum inconsistent: no reference, not a failed run
        reference = Reference.from_vector(total, bins, institutions)
    except ValueError as exc:
        log(WARNING, "No reference distribution: the secure sum is inconsistent: %s", exc)
        return None
    log(INFO, "Reference distribution (SecAgg+): %d training rows", reference.rows)
    return reference


def _counts(text: str, length: int) -> np.ndarray:
    values = json.loads(text)
    if (
        not isinstance(values, list)
        or len(values) != length
        or any(type(v) is not int or v < 0 for v in values)
    ):
        raise ValueError(f"expected {length} whole non-negative counts")
    return np.asarray(values, dtype=np.int64)
