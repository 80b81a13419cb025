"""A stand-in for Flower's Grid in unit tests: every node answers at once, in process."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from flwr.app import Message, RecordDict


def reply_from_node(message: Message, content: RecordDict) -> Message:
    """`content` as the reply of the node `message` was sent to (ids as the runtime sets them)."""
    node = message.metadata.dst_node_id
    message.metadata.__dict__["_message_id"] = f"id-{node}"
    reply = Message(content, reply_to=message)
    reply.metadata.__dict__["_src_node_id"] = node
    return reply


class AnsweringGrid:
    """Answers each message with `answer(message)` as it is pushed (`reply` builds the
    reply); `nodes` for strategies that sample."""

    def __init__(
        self,
        answer: Callable[[Message], RecordDict],
        *,
        nodes: Iterable[int] = (),
        reverse: bool = False,
    ) -> None:
        self.answer = answer
        self.nodes = list(nodes)
        self.reverse = reverse
        self._replies: dict[str, Message] = {}

    def get_node_ids(self) -> list[int]:
        return self.nodes

    def reply(self, message: Message) -> Message:
        return reply_from_node(message, self.answer(message))

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for m in messages:
            reply = self.reply(m)
            self._replies[reply.metadata.reply_to_message_id] = reply
            ids.append(reply.metadata.reply_to_message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        replies = [self._replies.pop(i) for i in list(message_ids) if i in self._replies]
        return list(reversed(replies)) if self.reverse else replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        return self.pull_messages(self.push_messages(messages))
