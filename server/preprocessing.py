"""Agree the preprocessing with the institutions before training (a Flower `query` round)."""

from __future__ import annotations

import math
import time
from logging import INFO, WARNING

from flwr.app import Message
from flwr.common.logger import log
from flwr.serverapp import Grid

from jointcredit.data.schema import Schema
from jointcredit.federation import protocol
from jointcredit.federation.protocol import SummaryQuery
from jointcredit.federation.settings import RunSettings
from jointcredit.models.preprocessing import InstitutionSummary, PreprocessingSpec, agree
from jointcredit.server.errors import FederationError
from jointcredit.server.grid import InstitutionGrid, institution_of

__all__ = ["FederationError", "agree_preprocessing", "wait_for_nodes"]


def wait_for_nodes(grid: Grid, minimum: int, timeout: float) -> list[int]:
    """Wait until `minimum` nodes are connected, then briefly for the count to settle."""
    deadline = time.monotonic() + timeout
    nodes = sorted(grid.get_node_ids())
    while len(nodes) < minimum:
        if time.monotonic() > deadline:
            raise FederationError(
                f"only {len(nodes)} of at least {minimum} institution nodes connected "
                f"within {timeout:.0f} s"
            )
        time.sleep(0.2)
        nodes = sorted(grid.get_node_ids())
    stable_since = time.monotonic()
    settle_deadline = time.monotonic() + 3.0
    while time.monotonic() - stable_since < 0.5 and time.monotonic() < settle_deadline:
        time.sleep(0.1)
        now = sorted(grid.get_node_ids())
        if now != nodes:
            nodes, stable_since = now, time.monotonic()
    return nodes


def agree_preprocessing(
    grid: InstitutionGrid, nodes: list[int], settings: RunSettings
) -> tuple[PreprocessingSpec, Schema, dict[int, str], list[InstitutionSummary]]:
    """Ask every node for its schema and summary; fail loudly, naming institutions, on error.

    The schema is not secret, but every institution must hold the same one: the server
    compares them instead of trusting a file of its own.
    """
    query = SummaryQuery(
        max_categories=settings.max_categories, min_category_count=settings.min_category_count
    )
    messages = [
        Message(protocol.summary_query(query), dst_node_id=n, message_type=protocol.QUERY)
        for n in nodes
    ]
    replies = list(grid.send_and_receive(messages, timeout=settings.join_seconds))
    exchange = grid.exchanges[-1]
    problems = {**exchange.errors, **exchange.rejected}
    # A node whose reply fails verification (unknown, revoked or forged key) is left out of
    # the federation - its rows shape nothing, its later updates are rejected too - and the
    # run goes on if enough verified institutions remain. Errors (bad data, a crash) and
    # missing replies still stop the run: they are the institution's to fix, loudly.
    needed = max(1, math.ceil(settings.min_valid_fraction * len(nodes)))
    if (
        exchange.errors
        or len(replies) + len(exchange.rejected) < len(nodes)
        or (len(replies) < needed)
    ):
        detail = "; ".join(f"{i}: {e}" for i, e in sorted(problems.items())) or "no replies"
        raise FederationError(f"federated preprocessing failed: {detail}")
    for inst, reason in sorted(exchange.rejected.items()):
        log(WARNING, "Left out of the federation, its reply was rejected: %s (%s)", inst, reason)
    node_inst: dict[int, str] = {}
    summaries: list[InstitutionSummary] = []
    schemas: dict[str, Schema] = {}
    for r in replies:
        inst = institution_of(r, grid.node_institution)
        if inst in node_inst.values():
            raise FederationError(f"two nodes claim institution {inst!r}")
        node_inst[r.metadata.src_node_id] = inst
        try:
            record = protocol.parse_summary_reply(r.content)
            schemas[inst] = Schema.model_validate_json(record.data_schema)
            summaries.append(InstitutionSummary.model_validate_json(record.summary))
        except ValueError as exc:
            raise FederationError(f"{inst}: unreadable preprocessing summary: {exc}") from exc
    first_inst, schema = next(iter(schemas.items()))
    differing = [i for i, s in schemas.items() if s != schema]
    if differing:
        raise FederationError(
            f"institutions disagree on the data schema: {', '.join(differing)} differ from "
            f"{first_inst}"
        )
    positives = sum(s.positives for s in summaries)
    rows = sum(s.rows for s in summaries)
    if positives in (0, rows):
        raise FederationError(
            f"label {schema.label!r} has one class across the whole federation "
            f"({positives} positives in {rows} training rows): nothing to learn"
        )
    spec = agree(
        summaries,
        schema,
        max_categories=settings.max_categories,
        min_count=settings.min_category_count,
        standardize_indicators=settings.standardize_indicators,
    )
    # The spec itself (kilobytes of JSON) rides in every message's config, never in the log.
    log(
        INFO,
        "Agreed preprocessing: %d input features from %d rows (spec sha256 %s, %d bytes)",
        spec.n_outputs,
        rows,
        spec.digest()[:16],
        len(spec.to_json()),
    )
    return spec, schema, node_inst, summaries
