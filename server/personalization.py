"""The hierarchical personalisation prior: one `query.prior` round before the final evaluation.

Each institution fits the final global model to its own rows and replies with its squared
deviation per coefficient (`jointcredit.models.personalize.prior_deviation`); the coordinator
sums the verified replies and sends the sum and the count with the final evaluate message, so
each institution can take the others' mean as its prior variance. A deviation magnitude per
coefficient says less than a FedAvg update (the signed difference itself, every round), but it
is neither noised nor masked: `RunSettings` allows the method only without DP, SecAgg+ and
robust rules. A reply that is not a finite, non-negative array per model parameter is left out.
"""

from __future__ import annotations

from logging import WARNING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common.logger import log

from jointcredit.models.personalize import PRIOR, PRIOR_ACTION
from jointcredit.models.settings import RunSettings
from jointcredit.server.grid import InstitutionGrid, institution_of


def federation_prior(
    grid: InstitutionGrid,
    nodes: list[int],
    arrays: ArrayRecord,
    shapes: dict[str, tuple[int, ...]],
    config: ConfigRecord,
    settings: RunSettings,
) -> tuple[ArrayRecord, list[str]] | None:
    """(sum of the institutions' squared deviations, who it covers); None when fewer than two
    institutions answered usably (then there is no "others" to learn from: Ditto runs)."""
    messages = [
        Message(
            RecordDict({"arrays": arrays, "config": config}),
            dst_node_id=n,
            message_type=f"query.{PRIOR_ACTION}",
        )
        for n in nodes
    ]
    replies = list(grid.send_and_receive(messages, timeout=settings.round_timeout))
    total = {name: np.zeros(shape) for name, shape in shapes.items()}
    covered: list[str] = []
    for reply in replies:
        if reply.has_error():
            continue  # logged below, with the exchange's other failures
        inst = institution_of(reply, grid.node_institution)
        problem = _problem(reply, shapes)
        if problem:
            log(WARNING, "Prior deviation of %s left out: %s", inst, problem)
            continue
        record = reply.content.array_records[PRIOR]
        for name in shapes:
            total[name] += record[name].numpy()
        covered.append(inst)
    exchange = grid.exchanges[-1]
    for inst, reason in sorted({**exchange.errors, **exchange.rejected}.items()):
        log(WARNING, "Prior deviation of %s missing: %s", inst, reason)
    if len(covered) < 2:
        log(WARNING, "Hierarchical prior from %d institution(s): Ditto instead", len(covered))
        return None
    return ArrayRecord({n: Array(t) for n, t in total.items()}), covered


def _problem(reply: Message, shapes: dict[str, tuple[int, ...]]) -> str:
    if PRIOR not in reply.content.array_records:
        return "no deviation record"
    record = reply.content.array_records[PRIOR]
    if set(record.keys()) != set(shapes):
        return f"names {sorted(record.keys())}, expected {sorted(shapes)}"
    for name, shape in shapes.items():
        values = record[name].numpy()
        if values.shape != shape:
            return f"{name} has shape {values.shape}, expected {shape}"
        if not np.all(np.isfinite(values)) or (values < 0).any():
            return f"{name} is not finite and non-negative"
    return ""
