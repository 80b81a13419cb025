"""Simulated faults: institutions that crash, drop out or reply late, per training round.

`faults = "dropout=0.3,straggler=0.1,crash=0.05"` (simulations only): in each training round
(for gradient-boosted trees: each tree) every institution draws one number from (seed, round,
institution) alone, so a run is reproducible and a higher rate drops a superset:

- `crash`: the node's ClientApp raises before its reply leaves (Flower sends the coordinator
  an error reply); the node did its work, so its own state stays in step (`client.faults`);
- `dropout`: no reply at all; the coordinator hears nothing until `round-timeout`;
- `straggler`: the reply arrives `STRAGGLER_DELAY` round timeouts after it was asked, past
  the round's end; the coordinator must not wait for it nor use it later.

Dropouts and stragglers are the network's doing, simulated between the coordinator's grid and
the nodes (`server.faults`). The preprocessing, binning and final (personalisation) rounds
are not faulted: the first need every institution by design, and the final one reports each
institution's own evaluation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final, Literal

from flwr.app import MessageType, RecordDict

from jointcredit.federation import protocol

Fault = Literal["crash", "dropout", "straggler"]
FAULTS: Final[tuple[Fault, ...]] = ("crash", "dropout", "straggler")
# How late a straggler's reply arrives, in round timeouts after it was asked.
STRAGGLER_DELAY: Final = 1.5


@dataclass(frozen=True)
class FaultPlan:
    """The share of institutions hit by each fault in every faulted round."""

    crash: float = 0.0
    dropout: float = 0.0
    straggler: float = 0.0

    @property
    def active(self) -> bool:
        return self.crash + self.dropout + self.straggler > 0

    def fault(self, seed: int, server_round: int, institution: str) -> Fault | None:
        """What happens to `institution` in `server_round` (a tree's number for trees)."""
        if not self.active:
            return None
        digest = hashlib.sha256(f"faults/{seed}/{server_round}/{institution}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        for kind, rate in (("crash", self.crash), ("dropout", self.dropout)):
            if u < rate:
                return kind  # type: ignore[return-value]
            u -= rate
        return "straggler" if u < self.straggler else None


def parse_faults(spec: str) -> FaultPlan:
    """`"dropout=0.3,straggler=0.1"` -> FaultPlan; a bad spec fails naming the item."""
    rates: dict[str, float] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        kind, sep, value = item.partition("=")
        kind = kind.strip()
        try:
            rate = float(value)
        except ValueError:
            rate = -1.0
        if not sep or kind not in FAULTS or not 0 <= rate <= 1 or kind in rates:
            raise ValueError(
                f"faults {item!r}: expected KIND=SHARE, each kind once, KIND one of "
                f"{', '.join(FAULTS)} and SHARE between 0 and 1"
            )
        rates[kind] = rate
    if sum(rates.values()) > 1:
        raise ValueError(f"faults {spec!r}: the shares add up to more than 1")
    return FaultPlan(**rates)


def faulted_round(message_type: str, content: RecordDict, *, rounds: int, gbdt: bool) -> int | None:
    """The round whose fault draw applies to a coordinator message: a training round's train
    and evaluate messages (1..rounds), or for trees the tree (1-based) of a tree level's
    request; None for every other message (queries, the final round)."""
    if gbdt:
        if message_type != protocol.HISTOGRAMS_TRAIN:
            return None
        record = content.config_records.get(protocol.CONFIG)
        if record is None:
            return None
        return protocol.TreeLevelConfig.parse(record, "tree level config").tree + 1
    if message_type not in (MessageType.TRAIN, MessageType.EVALUATE):
        return None
    server_round = protocol.server_round(content)
    if server_round is None or not 1 <= server_round <= rounds:
        return None
    return server_round
