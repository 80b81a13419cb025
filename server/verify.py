"""The coordinator's side of signed updates: every reply is checked before any strategy sees it.

`InstitutionGrid` calls `UpdateVerifier.check` for each reply as it arrives; a reply that
fails is dropped (the strategy never sees it) and recorded with its reason. The verifier also
holds what must stay consistent across a run: which institution each node is (bound at its
first verified reply, the preprocessing query), and every nonce already used.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from flwr.app import Message

from jointcredit.federation import protocol
from jointcredit.trust.store import TrustStore
from jointcredit.trust.updates import (
    Accepted,
    Expected,
    Reason,
    Rejected,
    check_content,
)


@dataclass
class UpdateVerifier:
    trust: TrustStore
    run_id: int
    node_institution: dict[int, str] = field(default_factory=dict)
    rejected: Counter[str] = field(default_factory=Counter)
    accepted: int = 0
    verify_seconds: float = 0.0
    sign_seconds: float = 0.0
    _nonces: set[tuple[str, bytes]] = field(default_factory=set)

    def check(self, reply: Message, sent: Message | None) -> Accepted:
        """Accept `reply` (an answer to `sent`) or raise `Rejected`."""
        started = time.perf_counter()
        try:
            accepted = self._check(reply, sent)
        except Rejected as exc:
            self.rejected[exc.reason.value] += 1
            raise
        finally:
            self.verify_seconds += time.perf_counter() - started
        self.accepted += 1
        self.sign_seconds += accepted.sign_seconds
        return accepted

    def _check(self, reply: Message, sent: Message | None) -> Accepted:
        node = reply.metadata.src_node_id
        if sent is None:
            raise Rejected(Reason.REPLAYED, f"node {node} was not asked in this exchange")
        server_round = protocol.server_round(sent.content) if sent.has_content() else None
        expected = Expected(
            run_id=self.run_id,
            server_round=server_round or 0,
            node_id=node,
            message_type=sent.metadata.message_type,
            institution=self.node_institution.get(node),
        )
        accepted = check_content(reply.content, expected, self.trust)
        claimed = protocol.claimed_institution(reply.content)
        if claimed != accepted.institution:
            raise Rejected(
                Reason.WRONG_INSTITUTION,
                f"signed by {accepted.institution} but the reply says {claimed}",
            )
        owner = next((n for n, i in self.node_institution.items() if i == claimed), None)
        if owner is not None and owner != node:
            raise Rejected(
                Reason.WRONG_INSTITUTION, f"{claimed} is already node {owner}, not node {node}"
            )
        if (accepted.institution, accepted.nonce) in self._nonces:
            raise Rejected(Reason.REPLAYED, "nonce already used: a copy of an earlier reply")
        self._nonces.add((accepted.institution, accepted.nonce))
        self.node_institution.setdefault(node, accepted.institution)
        return accepted
