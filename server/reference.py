"""The reference round (`query.reference`), after training: each institution counts its
training rows per score band of the final global model and per feature bin
(`client.reference`); the coordinator adds the verified counts up into the artifact's
`reference.json` (`models.reference`), which a service compares the applicants it scores with
(stability monitoring, docs/GOVERNANCE.md).

Counts only leave a node, as in the binning rounds. A reply that failed, was rejected or does
not hold the agreed number of whole non-negative counts is left out and named in the log; the
reference records whose rows it covers. Under `secagg` the round does not run yet (the counts
would reach the coordinator unmasked): the artifact then has no reference and the service
reports monitoring as unavailable.
"""

from __future__ import annotations

import json
from logging import INFO, WARNING

import numpy as np
from flwr.app import ArrayRecord, Message
from flwr.common.logger import log

from jointcredit.federation import protocol
from jointcredit.federation.protocol import ModelMessage, ReferenceQuery, RoundConfig
from jointcredit.federation.settings import RunSettings
from jointcredit.models.binning import BinningSpec
from jointcredit.models.reference import Reference, vector_length
from jointcredit.server.grid import InstitutionGrid, institution_of


def reference_round(
    grid: InstitutionGrid,
    nodes: list[int],
    arrays: ArrayRecord,
    config: RoundConfig,
    bins: BinningSpec,
    settings: RunSettings,
) -> Reference | None:
    """The federation's reference distribution; None when it cannot be had (no usable
    reply, or `secagg`)."""
    if settings.privacy == "secagg":
        log(WARNING, "No reference distribution under privacy = secagg: monitoring unavailable")
        return None
    query = ReferenceQuery(bins=bins.to_json())
    model = ModelMessage(arrays, config)
    messages = [
        Message(
            protocol.reference_query(model, query),
            dst_node_id=n,
            message_type=protocol.REFERENCE_QUERY,
        )
        for n in nodes
    ]
    replies = list(grid.send_and_receive(messages, timeout=settings.round_timeout))
    length = vector_length(bins)
    total = np.zeros(length, dtype=np.int64)
    covered: list[str] = []
    for reply in replies:
        if reply.has_error():
            continue  # logged below with the exchange's other failures
        inst = institution_of(reply, grid.node_institution)
        try:
            counts = _counts(protocol.parse_reference_reply(reply.content).counts, length)
        except ValueError as exc:
            log(WARNING, "Reference counts of %s left out: %s", inst, exc)
            continue
        total += counts
        covered.append(inst)
    exchange = grid.exchanges[-1]
    for inst, reason in sorted({**exchange.errors, **exchange.rejected}.items()):
        log(WARNING, "Reference counts of %s missing: %s", inst, reason)
    if not covered:
        log(WARNING, "No reference counts: the artifact has no reference distribution")
        return None
    reference = Reference.from_vector(total, bins, sorted(covered))
    log(INFO, "Reference distribution: %d training rows of %s", reference.rows, covered)
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
