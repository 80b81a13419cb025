"""A Grid wrapper that sees every reply before any strategy does.

Flower strategies aggregate replies in arrival order, and float32 sums depend on order, so two
runs with the same seed would differ. Wrapping the Grid (instead of subclassing each strategy)
orders replies by institution for every strategy alike and records what each institution
reported, per exchange, for `metrics.json`. Update verification (signatures) hooks in here too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from flwr.app import Message, RecordDict
from flwr.proto.node_pb2 import NodeInfo
from flwr.serverapp import Grid
from flwr.supercore.run import Run

IDENTITY = "identity"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def short_reason(reason: str | None) -> str:
    """The institution's own error message, without the Ray/Flower traceback around it."""
    if not reason:
        return "error without a reason"
    text = _ANSI.sub("", reason)
    if "Message: " in text:  # Flower's ClientAppException wraps the original message so
        text = text.rsplit("Message: ", 1)[1]
    lines = [ln.strip() for ln in text.strip().strip("'>").splitlines() if ln.strip()]
    return lines[-1] if lines else "error without a reason"


def institution_of(reply: Message, fallback: dict[int, str]) -> str:
    if not reply.has_error() and IDENTITY in reply.content.config_records:
        return str(reply.content.config_records[IDENTITY]["institution"])
    node = reply.metadata.src_node_id
    return fallback.get(node, f"node-{node}")


@dataclass
class Exchange:
    """One send-and-receive: its message type, round and each institution's answer."""

    message_type: str
    server_round: int | None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


class InstitutionGrid(Grid):
    """Delegates to the real Grid; orders replies by institution and records their metrics."""

    def __init__(self, inner: Grid) -> None:
        self.inner = inner
        self.node_institution: dict[int, str] = {}
        self.exchanges: list[Exchange] = []

    # -- plain delegation
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

    # -- the point of the wrapper
    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        sent = list(messages)
        replies = list(self.inner.send_and_receive(sent, timeout=timeout))
        for r in replies:
            if not r.has_error() and IDENTITY in r.content.config_records:
                self.node_institution[r.metadata.src_node_id] = institution_of(r, {})
        replies.sort(
            key=lambda r: (institution_of(r, self.node_institution), r.metadata.src_node_id)
        )
        self._record(sent, replies)
        return replies

    def _record(self, sent: list[Message], replies: list[Message]) -> None:
        if not sent:
            return
        first = sent[0]
        config = first.content.config_records.get("config")
        rnd = config.get("server-round") if config is not None else None
        ex = Exchange(
            message_type=first.metadata.message_type,
            server_round=int(rnd) if isinstance(rnd, int) else None,
        )
        for r in replies:
            inst = institution_of(r, self.node_institution)
            if r.has_error():
                ex.errors[inst] = short_reason(r.error.reason)
                continue
            values: dict[str, float] = {}
            for record in r.content.metric_records.values():
                for k, v in record.items():
                    if isinstance(v, int | float) and not isinstance(v, bool):
                        values[k] = float(v)
            ex.metrics[inst] = values
        answered = set(ex.metrics) | set(ex.errors)
        for m in sent:
            inst = self.node_institution.get(
                m.metadata.dst_node_id, f"node-{m.metadata.dst_node_id}"
            )
            if inst not in answered:
                ex.errors[inst] = "no reply before the timeout"
        self.exchanges.append(ex)


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
