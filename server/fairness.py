"""Fairness of the final model across the schema's protected attributes, from counts.

    query.fairness_groups   each institution: the groups its test rows hold, per attribute
                            -> the coordinator takes the union (the agreed `GroupLayout`)
    query.fairness_counts   each institution: its applicants per attribute, group, label and
                            whole score of the final model (`models.fairness.count_vector`)
                            -> the coordinator adds the vectors up and computes every figure
                               (`models.fairness.fairness`)

Under `secagg` the counts are one SecAgg+ sum (`server.secagg.secure_sum`, on a grid of its
own), so the coordinator learns the federation's counts only, not one institution's. Either
way no row's group leaves an institution. The figures must cover every institution that joined
(then they equal the computation on the pooled test rows); if one does not answer, the run
goes on without a `fairness` section and the log says why.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from logging import INFO, WARNING

import numpy as np
from flwr.app import ArrayRecord, Context, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from jointcredit.data.schema import Schema
from jointcredit.federation import protocol
from jointcredit.federation.fairness import Cutoffs, Fairness
from jointcredit.federation.protocol import FairnessCountsQuery, FairnessGroupsQuery, RoundConfig
from jointcredit.federation.settings import RunSettings
from jointcredit.models.fairness import GroupLayout, fairness, merge_values
from jointcredit.server.errors import FederationError
from jointcredit.server.grid import InstitutionGrid, institution_of
from jointcredit.server.secagg import COUNT_RANGE, secure_sum

CUTOFFS_SOURCE = "run settings fairness-approve / fairness-decline (the service policy's cut-offs)"


def cutoffs(settings: RunSettings) -> Cutoffs:
    return Cutoffs(
        approve=settings.fairness_approve, decline=settings.fairness_decline, source=CUTOFFS_SOURCE
    )


def measure_fairness(
    grid: Grid,
    igrid: InstitutionGrid,
    context: Context,
    settings: RunSettings,
    schema: Schema,
    nodes: list[int],
    arrays: ArrayRecord,
    config: RoundConfig,
) -> tuple[Fairness | None, InstitutionGrid | None]:
    """The fairness section of metrics.json, or None when the schema protects no attribute,
    the settings turn it off, or an institution did not answer; under `secagg` also the grid
    its SecAgg+ sum ran on (whose verified replies the security record counts)."""
    if not settings.fairness or not schema.protected:
        return None, None
    sum_grid = None
    try:
        layout = _layout(igrid, nodes, settings, schema)
        query = FairnessCountsQuery(layout=layout.model_dump_json())
        secure = settings.privacy == "secagg"
        if secure:
            # A grid of its own: SecAgg+ rounds are train messages, which the training's
            # records must not count.
            sum_grid = InstitutionGrid(grid, igrid.verifier, settings.min_valid_fraction)
            config_values = protocol.fairness_sum_config(arrays, config, query)
            total = secure_sum(
                sum_grid, context, settings, layout.length, config_values, n_nodes=len(nodes)
            )
        else:
            total = _plain_sum(igrid, nodes, settings, arrays, config, query, layout)
    except FederationError as exc:
        log(WARNING, "Fairness not measured: %s", exc)
        return None, sum_grid
    try:  # a masked input can make the sum impossible (a negative count): not measured
        result = fairness(total, layout, cutoffs(settings), secure=secure)
    except ValueError as exc:
        log(WARNING, "Fairness not measured: the counts are inconsistent: %s", exc)
        return None, sum_grid
    log(
        INFO,
        "Fairness: adverse impact ratio %s",
        "; ".join(
            f"{a} min {min((v for v in r.values() if v is not None), default=float('nan')):.3f}"
            for a, r in result.adverse_impact_ratio.items()
        ),
    )
    return result, sum_grid


def _replies(
    grid: InstitutionGrid,
    nodes: list[int],
    content: Callable[[], RecordDict],
    message_type: str,
    timeout: float,
) -> list[Message]:
    messages = [Message(content(), dst_node_id=n, message_type=message_type) for n in nodes]
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    exchange = grid.exchanges[-1]
    problems = {**exchange.errors, **exchange.rejected}
    if problems or len(replies) < len(nodes):
        detail = "; ".join(f"{i}: {e}" for i, e in sorted(problems.items())) or "no replies"
        raise FederationError(f"{message_type} needs every institution: {detail}")
    return replies


def _layout(
    grid: InstitutionGrid, nodes: list[int], settings: RunSettings, schema: Schema
) -> GroupLayout:
    query = FairnessGroupsQuery(protected=json.dumps(list(schema.protected)))
    content = lambda: protocol.fairness_groups_query(query)  # noqa: E731
    answers: list[dict[str, list[str]]] = []
    for reply in _replies(
        grid, nodes, content, protocol.FAIRNESS_GROUPS_QUERY, settings.round_timeout
    ):
        inst = institution_of(reply, grid.node_institution)
        try:
            payload = json.loads(protocol.parse_fairness_groups_reply(reply.content).payload)
            if not isinstance(payload, dict) or not all(
                isinstance(v, list) and all(isinstance(g, str) for g in v) for v in payload.values()
            ):
                raise ValueError("not {attribute: [group, ...]}")
        except ValueError as exc:
            raise FederationError(f"{inst}: unreadable fairness groups: {exc}") from exc
        answers.append(payload)
    try:
        return merge_values(answers, schema.protected)
    except ValueError as exc:
        raise FederationError(str(exc)) from exc


def _plain_sum(
    grid: InstitutionGrid,
    nodes: list[int],
    settings: RunSettings,
    arrays: ArrayRecord,
    config: RoundConfig,
    query: FairnessCountsQuery,
    layout: GroupLayout,
) -> np.ndarray:
    content = lambda: protocol.fairness_counts_query(arrays, config, query)  # noqa: E731
    total = np.zeros(layout.length, dtype=np.int64)
    for reply in _replies(
        grid, nodes, content, protocol.FAIRNESS_COUNTS_QUERY, settings.round_timeout
    ):
        inst = institution_of(reply, grid.node_institution)
        try:
            vector = protocol.parse_fairness_counts_reply(reply.content)
        except ValueError as exc:
            raise FederationError(f"{inst}: unreadable fairness counts: {exc}") from exc
        if (
            vector.shape != (layout.length,)
            or vector.dtype != np.int64
            or (vector < 0).any()
            or (vector >= COUNT_RANGE).any()
        ):
            raise FederationError(
                f"{inst}: fairness counts must be {layout.length} whole numbers in "
                f"[0, {COUNT_RANGE})"
            )
        total += vector
    return total
