"""The real ClientApp as the nodes of a unit test's `AnsweringGrid` (nodes 100, 101, ...,
institutions 0, 1, ...), and the preprocessing they agree through it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from flwr.app import Context, Message, MessageType, RecordDict

from jointcredit.client.app import app
from jointcredit.data.schema import Schema
from jointcredit.federation import protocol
from jointcredit.federation.protocol import NodeConfig, SummaryQuery
from jointcredit.federation.settings import RunSettings
from jointcredit.models.preprocessing import InstitutionSummary, PreprocessingSpec, agree
from jointcredit.server.grid import InstitutionGrid


def node_reply(msg: Message, settings: RunSettings, keys: Path) -> Message:
    """The ClientApp's reply to `msg` as node 100 + its partition of 3, signed with the run's
    keys in `keys`; it must not be an error."""
    partition = msg.metadata.dst_node_id - 100
    context = Context(
        run_id=7,
        node_id=msg.metadata.dst_node_id,
        node_config=NodeConfig(partition_id=partition, num_partitions=3).values(),
        state=RecordDict(),
        run_config=settings.replaced(keys_dir=str(keys)).to_run_config(),
    )
    msg.metadata.__dict__["_message_id"] = f"m-{partition}"
    reply = app(msg, context)
    assert not reply.has_error(), reply.error
    return reply


def agreed_preprocessing(
    grid: InstitutionGrid, nodes: Sequence[int]
) -> tuple[Schema, PreprocessingSpec]:
    """The schema the nodes report and the preprocessing agreed from their summaries."""
    query = protocol.summary_query(SummaryQuery(max_categories=64, min_category_count=5))
    sent = [Message(query, dst_node_id=n, message_type=MessageType.QUERY) for n in nodes]
    records = [protocol.parse_summary_reply(r.content) for r in grid.send_and_receive(sent)]
    schema = Schema.model_validate_json(records[0].data_schema)
    summaries = [InstitutionSummary.model_validate_json(r.summary) for r in records]
    return schema, agree(summaries, schema, max_categories=64, min_count=5)
