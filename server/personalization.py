"""The final round: each institution evaluates the final model and personalises a copy.

Under the hierarchical prior a `query.prior` round comes first.

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
from flwr.app import Array, ArrayRecord, Message
from flwr.common.logger import log
from torch import nn

from jointcredit.federation import protocol
from jointcredit.federation.metrics import Personalization
from jointcredit.federation.protocol import ModelMessage, ReferenceQuery, RoundConfig
from jointcredit.federation.settings import RunSettings
from jointcredit.server.grid import Exchange, InstitutionGrid, institution_of


def final_round(
    grid: InstitutionGrid,
    nodes: list[int],
    node_inst: dict[int, str],
    final_arrays: ArrayRecord,
    initial: nn.Module,
    round_config: RoundConfig,
    settings: RunSettings,
    reference: ReferenceQuery | None = None,
) -> tuple[Exchange, Personalization, list[Message]]:
    """The final evaluate exchange, with personalisation when the settings ask for it and
    the reference counts when `reference` is given (`protocol.ask_reference`); with its
    verified replies."""
    config = round_config.model_copy(
        update={"finetune_epochs": settings.finetune_epochs, "server_round": settings.rounds + 1}
    )
    personalization = Personalization(method=settings.personalization_method)
    in_prior: set[str] = set()
    prior_sum: ArrayRecord | None = None
    if settings.personalization_method == "hierarchical":
        shapes = {n: tuple(p.shape) for n, p in initial.named_parameters()}
        prior = federation_prior(grid, nodes, final_arrays, shapes, round_config, settings)
        if prior is None:
            personalization.method = "ditto"
        else:
            prior_sum, in_prior = prior[0], set(prior[1])
            config = config.model_copy(update={"prior_count": len(in_prior)})
            personalization.prior_institutions = prior[1]
            personalization.ditto_institutions = sorted(set(node_inst.values()) - in_prior)
    # Only an institution whose deviation is in the sum gets it (it subtracts its own); one
    # whose prior reply failed or was rejected personalises with Ditto.
    messages = []
    for n in nodes:
        content = ModelMessage(
            final_arrays,
            config,
            prior_sum if prior_sum is not None and node_inst.get(n) in in_prior else None,
        ).to_content()
        if reference is not None:
            protocol.ask_reference(content, reference)
        messages.append(Message(content, dst_node_id=n, message_type=protocol.EVALUATE))
    replies = list(grid.send_and_receive(messages, timeout=settings.round_timeout))
    return grid.exchanges[-1], personalization, replies


def federation_prior(
    grid: InstitutionGrid,
    nodes: list[int],
    arrays: ArrayRecord,
    shapes: dict[str, tuple[int, ...]],
    config: RoundConfig,
    settings: RunSettings,
) -> tuple[ArrayRecord, list[str]] | None:
    """(sum of the institutions' squared deviations, who it covers); None when fewer than two
    institutions answered usably (then there is no "others" to learn from: Ditto runs)."""
    messages = [
        Message(
            ModelMessage(arrays, config).to_content(),
            dst_node_id=n,
            message_type=protocol.PRIOR_QUERY,
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
        record = protocol.prior_of(reply.content)
        assert record is not None  # checked by _problem
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
    record = protocol.prior_of(reply.content)
    if record is None:
        return "no deviation record"
    if set(record.keys()) != set(shapes):
        return f"names {sorted(record.keys())}, expected {sorted(shapes)}"
    for name, shape in shapes.items():
        values = record[name].numpy()
        if values.shape != shape:
            return f"{name} has shape {values.shape}, expected {shape}"
        if not np.all(np.isfinite(values)) or (values < 0).any():
            return f"{name} is not finite and non-negative"
    return ""
