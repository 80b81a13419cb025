"""The network's side of the simulated faults (`faults` in the run config): replies that never
come (`dropout`) and replies that come after the round ended (`straggler`).

`SimulatedNetwork` sits between the real Grid and `InstitutionGrid`, so the coordinator's own
code sees exactly what a network with those faults would give it: for a dropout no reply to
pull, ever; for a straggler its reply only `STRAGGLER_DELAY` round timeouts after the message
was sent. The nodes themselves answer at once (in a simulation they share a few processes:
a node that slept would hold up the others). Crashes are the node's (`client.faults`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from logging import INFO

from flwr.app import Message
from flwr.common.logger import log
from flwr.serverapp import Grid

from jointcredit.federation.faults import STRAGGLER_DELAY, FaultPlan, faulted_round, parse_faults
from jointcredit.federation.settings import RunSettings
from jointcredit.server.grid import DelegatingGrid


@dataclass
class _Held:
    fault: str
    release_at: float  # monotonic; never for a dropout


@dataclass
class SimulatedNetwork(DelegatingGrid):
    """Delegates to `inner`, losing or delaying the replies the fault plan says."""

    inner: Grid
    plan: FaultPlan
    settings: RunSettings
    institutions: Callable[[], dict[int, str]]  # node id -> institution, once known
    held: dict[str, _Held] = field(default_factory=dict)  # message id -> what happens
    late: dict[str, Message] = field(default_factory=dict)  # a straggler's reply, held back

    @classmethod
    def around(
        cls, grid: Grid, settings: RunSettings, institutions: Callable[[], dict[int, str]]
    ) -> Grid:
        """`grid` itself when the run simulates no faults."""
        plan = parse_faults(settings.faults)
        return cls(grid, plan, settings, institutions) if plan.active else grid

    def _fault(self, message: Message) -> str | None:
        s = self.settings
        server_round = faulted_round(
            message.metadata.message_type, message.content, rounds=s.rounds, gbdt=s.model == "gbdt"
        )
        institution = self.institutions().get(message.metadata.dst_node_id)
        if server_round is None or institution is None:
            return None
        fault = self.plan.fault(s.seed, server_round, institution)
        if fault in ("dropout", "straggler"):
            log(INFO, "Simulated %s: %s in round %d", fault, institution, server_round)
            return fault
        return None

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        sent = list(messages)
        faults = [self._fault(m) for m in sent]
        ids = list(self.inner.push_messages(sent))
        now = time.monotonic()
        for message_id, fault in zip(ids, faults, strict=False):
            if fault is not None:
                delay = STRAGGLER_DELAY * self.settings.round_timeout
                release = now + delay if fault == "straggler" else float("inf")
                self.held[message_id] = _Held(fault, release)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        wanted = list(message_ids)
        out: list[Message] = []
        for reply in self.inner.pull_messages([i for i in wanted if i not in self.late]):
            if reply.metadata.reply_to_message_id in self.held:
                self.late[reply.metadata.reply_to_message_id] = reply
            else:
                out.append(reply)
        now = time.monotonic()
        for message_id in wanted:
            held = self.held.get(message_id)
            if held is not None and message_id in self.late and now >= held.release_at:
                del self.held[message_id]
                out.append(self.late.pop(message_id))
        return out

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        raise NotImplementedError("InstitutionGrid drives the simulated network")
