"""A Grid wrapper that sees every reply before any strategy does.

Wrapping the Grid (instead of subclassing each strategy) gives every strategy alike (FedAvg,
FedProx, FedAvgM, the robust ones, DP wrappers) these:
- verification: each reply's signature is checked as it arrives; a rejected reply is dropped
  before aggregation and recorded with its reason, and a training or evaluation exchange with
  too few valid replies fails loudly, listing every reason;
- determinism: replies ordered by institution (float32 sums depend on order);
- the record of what each institution reported, per exchange, for `metrics.json`;
- bounded rounds with dropouts: once the federation's members are known, strategies address
  every member (a node gone offline is asked too and counts as dropped, instead of Flower's
  strategies waiting without end for it to come back); a reply that arrives after its round
  ended is noted as late and never used; below the quorum the run stops (`RoundFailed`),
  naming the round, who replied and why each other institution dropped;
- prompt replies: Flower's grids poll for replies at a fixed interval (0.1 s in simulation,
  3 s over the network), pure waiting in every message round, and trees need one round per
  tree level. This one pushes and pulls itself, polling from a millisecond and backing off to
  `MAX_POLL` while nothing arrives (the same push/pull calls, the same timeout).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from logging import WARNING

import numpy as np
from flwr.app import Message, MessageType, RecordDict
from flwr.common.logger import log
from flwr.proto.node_pb2 import NodeInfo
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from jointcredit.federation import protocol
from jointcredit.server.errors import FederationError
from jointcredit.server.verify import UpdateVerifier
from jointcredit.trust.updates import Rejected

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
MIN_POLL = 0.001  # seconds between pulls right after a send or a reply
MAX_POLL = 0.1  # ...backing off to this while nothing arrives


def short_reason(reason: str | None) -> str:
    """The institution's own error message, without the Ray/Flower traceback around it."""
    if not reason:
        return "error without a reason"
    text = _ANSI.sub("", reason)
    if "Message: " in text:  # Flower's ClientAppException wraps the original message so
        text = text.rsplit("Message: ", 1)[1]
    lines = [ln.strip() for ln in text.strip().strip("'>").splitlines() if ln.strip()]
    return lines[-1] if lines else "error without a reason"


def push_and_pull(
    grid: Grid, sent: list[Message], timeout: float | None
) -> tuple[list[str], list[Message]]:
    """Flower's `send_and_receive`, polling for the replies promptly (module docstring): the
    pushed messages' ids and the replies that came before `timeout`."""
    ids = list(grid.push_messages(sent))
    waiting = set(ids)
    deadline = None if timeout is None else time.monotonic() + timeout
    replies: list[Message] = []
    pause = MIN_POLL
    while waiting:
        got = list(grid.pull_messages(waiting))
        replies += got
        waiting.difference_update(r.metadata.reply_to_message_id for r in got)
        if not waiting or (deadline is not None and time.monotonic() >= deadline):
            break
        time.sleep(pause)
        pause = MIN_POLL if got else min(2 * pause, MAX_POLL)
    return ids, replies


def institution_of(reply: Message, known: dict[int, str]) -> str:
    """The node's verified institution if known, else what the reply claims."""
    node = reply.metadata.src_node_id
    if node in known:
        return known[node]
    claimed = protocol.claimed_institution(reply.content) if reply.has_content() else None
    return claimed if claimed is not None else f"node-{node}"


@dataclass
class Exchange:
    """One send-and-receive: its message type, round and each institution's answer."""

    message_type: str
    server_round: int | None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)  # institution -> "reason: detail"
    accepted: dict[str, str] = field(default_factory=dict)  # institution -> signed digest (hex)
    # Verified training replies without an update (record-level DP budget spent): their
    # metrics, kept apart so no strategy aggregates them.
    withheld: dict[str, dict[str, float]] = field(default_factory=dict)
    # Evaluate replies: each institution's (goods, bads) per score band, when sent.
    score_bands: dict[str, tuple[list[int], list[int]]] = field(default_factory=dict)


class RoundFailed(FederationError):
    """Too few institutions replied for a round to go on: the run stops here."""

    def __init__(self, message: str, server_round: int | None) -> None:
        super().__init__(message)
        self.server_round = server_round

    def __reduce__(self) -> tuple[type[RoundFailed], tuple[str, int | None]]:
        # Picklable whole: a sweep's cell raises it in another process (Exception's default
        # pickling would call __init__ with the message alone).
        return type(self), (str(self), self.server_round)


class BudgetSpent(FederationError):
    """Every institution asked to train has spent its privacy budget: training is over."""


class DelegatingGrid(Grid):
    """A Flower Grid that hands every call to `inner`; wrappers override what they change."""

    inner: Grid

    def set_run(self, run: Run) -> None:
        self.inner.set_run(run)

    @property
    def run(self) -> Run:
        return self.inner.run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def get_nodes(self) -> Iterable[NodeInfo]:
        return self.inner.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.inner.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.inner.send_and_receive(messages, timeout=timeout)


class InstitutionGrid(DelegatingGrid):
    """Delegates to the real Grid; verifies, orders and records every reply."""

    def __init__(
        self,
        inner: Grid,
        verifier: UpdateVerifier | None = None,
        min_valid_fraction: float = 1.0,
        *,
        update_bound: float | None = None,
        min_institutions: int = 0,
    ) -> None:
        self.inner = inner
        self.verifier = verifier
        self.min_valid_fraction = min_valid_fraction
        self.min_institutions = min_institutions
        # The federation's nodes once it is formed (`hold_members`): whom strategies address.
        self.members: list[int] | None = None
        # Messages whose round ended without their reply: message id -> (its exchange, the
        # institution, when it was sent). A reply that turns up later is noted, not used.
        self._unanswered: dict[str, tuple[Exchange, str, float]] = {}
        # Client-side clipping (institution-level DP): the DP guarantee assumes every update's
        # L2 norm is at most this; an institution that did not clip is rejected, not averaged.
        self.update_bound = update_bound
        self.exchanges: list[Exchange] = []
        self._claimed: dict[int, str] = {}  # unverified runs only: what replies said

    @property
    def node_institution(self) -> dict[int, str]:
        return self.verifier.node_institution if self.verifier is not None else self._claimed

    def hold_members(self, nodes: Iterable[int]) -> None:
        """From now on strategies address these nodes, online or not: Flower's sampling waits,
        without a deadline, until as many nodes are online as it wants."""
        self.members = sorted(nodes)

    def get_node_ids(self) -> Iterable[int]:
        # In institution order: a strategy sampling some of them (`fraction-train`) with a
        # seeded generator then draws the same institutions whatever the random node ids.
        nodes = self.inner.get_node_ids() if self.members is None else self.members
        known = self.node_institution
        return sorted(nodes, key=lambda node: (known.get(node, ""), node))

    # -- the point of the wrapper
    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        sent = list(messages)
        self._note_late_replies()
        pushed = time.monotonic()
        ids, replies = self._push_and_pull(sent, timeout)
        if not sent:
            return replies
        ex = self._exchange(sent[0])
        by_node = {m.metadata.dst_node_id: m for m in sent}
        valid: list[Message] = []
        for r in replies:
            if r.has_error():
                valid.append(r)  # errors are recorded below and ignored by the strategies
                continue
            if self.verifier is None:
                self._claimed.setdefault(r.metadata.src_node_id, institution_of(r, {}))
                inst = institution_of(r, self._claimed)
            else:
                try:
                    accepted = self.verifier.check(r, by_node.get(r.metadata.src_node_id))
                except Rejected as exc:
                    inst = institution_of(r, self.node_institution)
                    ex.rejected[inst] = str(exc)
                    log(WARNING, "Rejected %s reply of %s: %s", ex.message_type, inst, exc)
                    continue
                inst = accepted.institution
            try:  # signed is not well-formed: bookkeeping reads these as typed records
                protocol.check_metrics(ex.message_type, r.content)
            except protocol.ProtocolError as exc:
                ex.rejected[inst] = f"malformed: {exc}"
                log(WARNING, "Rejected %s reply of %s: %s", ex.message_type, inst, exc)
                continue
            if self.verifier is not None:
                ex.accepted[inst] = accepted.digest.hex()
            if ex.message_type == MessageType.TRAIN and protocol.withheld(r.content):
                ex.withheld[inst] = protocol.numbers(r.content)
                continue
            problem = self._unclipped(ex, by_node.get(r.metadata.src_node_id), r)
            if problem:
                ex.accepted.pop(inst, None)  # not aggregated: not in the manifest's record
                ex.rejected[inst] = problem
                log(WARNING, "Rejected %s reply of %s: %s", ex.message_type, inst, problem)
                continue
            valid.append(r)
        valid.sort(key=lambda r: (institution_of(r, self.node_institution), r.metadata.src_node_id))
        answered = {r.metadata.reply_to_message_id for r in replies}
        self._record(ex, sent, valid, {r.metadata.src_node_id for r in replies}, timeout)
        for message, message_id in zip(sent, ids, strict=False):
            if message_id not in answered:
                node = message.metadata.dst_node_id
                inst = self.node_institution.get(node, f"node-{node}")
                self._unanswered[message_id] = (ex, inst, pushed)
        self._require_enough(ex, len(sent))
        return valid

    def _note_late_replies(self) -> None:
        """Replies to messages of rounds that already ended: recorded as late, never verified,
        aggregated or answered to (Flower pulls a reply by the id of the message it answers,
        and its signature binds the round it was asked in)."""
        if not self._unanswered:
            return
        for reply in self.inner.pull_messages(list(self._unanswered)):
            ex, inst, sent_at = self._unanswered.pop(reply.metadata.reply_to_message_id)
            if reply.has_error():  # e.g. the message expired: still no reply
                continue
            ex.errors[inst] = (
                "replied after the round had ended (seen "
                f"{time.monotonic() - sent_at:.1f} s after it was asked): not used"
            )
            log(WARNING, "Late %s reply of %s (round %s): not used", ex.message_type, inst,
                ex.server_round)  # fmt: skip

    def _push_and_pull(
        self, sent: list[Message], timeout: float | None
    ) -> tuple[list[str], list[Message]]:
        return push_and_pull(self.inner, sent, timeout)

    def _unclipped(self, ex: Exchange, sent: Message | None, reply: Message) -> str | None:
        if self.update_bound is None or ex.message_type != MessageType.TRAIN or sent is None:
            return None
        norm = update_norm(sent.content, reply.content)
        if norm <= self.update_bound * (1 + 1e-4):  # float32 rounding of a clipped update
            return None
        return f"unclipped: update norm {norm:.4g} > clipping norm {self.update_bound:g}"

    @staticmethod
    def _exchange(first: Message) -> Exchange:
        return Exchange(
            message_type=first.metadata.message_type,
            server_round=protocol.server_round(first.content),
        )

    def _require_enough(self, ex: Exchange, asked: int) -> None:
        """Training and evaluation go on with a quorum of verified replies, never silently
        with too few. (The preprocessing query needs every node: `agree_preprocessing`.)"""
        if ex.message_type not in (MessageType.TRAIN, MessageType.EVALUATE):
            return
        if ex.withheld and len(ex.withheld) == asked:
            raise BudgetSpent(
                f"round {ex.server_round}: every institution has spent its privacy budget"
            )
        asked -= len(ex.withheld)  # they answered, legitimately without an update
        needed = self.quorum(asked)
        if len(ex.metrics) >= needed:
            return
        problems = {**ex.errors, **ex.rejected}
        reasons = "; ".join(f"{i}: {e}" for i, e in sorted(problems.items())) or "no replies"
        replied = ", ".join(sorted(ex.metrics)) or "nobody"
        raise RoundFailed(
            f"round {ex.server_round} {ex.message_type}: {len(ex.metrics)} valid replies of "
            f"{asked}, {needed} needed (min-valid-fraction {self.min_valid_fraction:g}, "
            f"min-institutions {self.min_institutions}); replied: {replied}; "
            f"dropped: {reasons}",
            ex.server_round,
        )

    def quorum(self, asked: int) -> int:
        """How many of `asked` institutions must send a verified reply for a round to go on."""
        return max(1, math.ceil(self.min_valid_fraction * asked), self.min_institutions)

    def _record(
        self,
        ex: Exchange,
        sent: list[Message],
        replies: list[Message],
        replied: set[int],
        timeout: float | None,
    ) -> None:
        for r in replies:
            inst = institution_of(r, self.node_institution)
            if r.has_error():
                ex.errors[inst] = short_reason(r.error.reason)
                continue
            ex.metrics[inst] = protocol.numbers(r.content)
            bands = protocol.score_bands(r.content)
            if bands is not None:
                ex.score_bands[inst] = bands
        for m in sent:  # by node: a rejected reply's sender may have no verified name yet
            if m.metadata.dst_node_id not in replied:
                node = m.metadata.dst_node_id
                inst = self.node_institution.get(node, f"node-{node}")
                ex.errors[inst] = f"no reply before the timeout ({timeout or 0:g} s)"
        self.exchanges.append(ex)


def update_norm(sent: RecordDict, reply: RecordDict) -> float:
    """L2 norm of (returned weights - sent weights) over every array, as Flower clips it."""
    before = next(iter(sent.array_records.values())).to_numpy_ndarrays()
    after = next(iter(reply.array_records.values())).to_numpy_ndarrays()
    return float(
        np.sqrt(
            sum(
                float(np.sum((a.astype(np.float64) - b) ** 2))
                for a, b in zip(after, before, strict=True)
            )
        )
    )


def nan_weighted_mean(rows: list[dict[str, float]], weight_key: str) -> dict[str, float]:
    """Weighted mean per metric, skipping undefined (NaN) values; the weights are summed."""
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for row in rows:
        w = row[weight_key]
        for k, v in row.items():
            if k != weight_key and not math.isnan(v):
                sums[k] = sums.get(k, 0.0) + w * v
                weights[k] = weights.get(k, 0.0) + w
    out = {k: sums[k] / weights[k] for k in sums if weights[k] > 0}
    out[weight_key] = sum(row[weight_key] for row in rows)
    return out


def metric_rows(records: list[RecordDict]) -> list[dict[str, float]]:
    return [
        {k: float(v) for k, v in mr.items() if isinstance(v, int | float)}
        for rd in records
        for mr in rd.metric_records.values()
    ]
