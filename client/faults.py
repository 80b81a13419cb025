"""The node's side of the simulated faults (`faults` in the run config): a crash.

A node drawn to crash in a round does its work and then raises instead of replying, so Flower
sends the coordinator an error reply. Raising after the work keeps the node's own state (tree
margins, SCAFFOLD's c_i, the DP accountant) in step, as when a node dies while sending.
Dropouts and stragglers are the network's (`jointcredit.server.faults`). Refused outside
simulations, as `client.adversary` is: a deployed node never fails on purpose.
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp.typing import ClientAppCallable

from jointcredit.client.data import node_data
from jointcredit.federation.faults import faulted_round, parse_faults
from jointcredit.federation.protocol import NodeConfig
from jointcredit.federation.settings import RunSettings


class SimulatedCrash(RuntimeError):
    """The crash a fault plan asked for."""


def fault_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    settings = RunSettings.from_run_config(context.run_config)
    reply = call_next(msg, context)
    if not settings.faults:
        return reply
    server_round = faulted_round(
        msg.metadata.message_type,
        msg.content,
        rounds=settings.rounds,
        gbdt=settings.model == "gbdt",
    )
    if server_round is None:
        return reply
    if not NodeConfig.parse(context.node_config, "node config").simulated:
        raise RuntimeError("the faults setting exists for simulations only")
    institution = node_data(dict(context.node_config), settings).institution
    if parse_faults(settings.faults).fault(settings.seed, server_round, institution) == "crash":
        raise SimulatedCrash(f"{institution} crashed in round {server_round} (simulated fault)")
    return reply
