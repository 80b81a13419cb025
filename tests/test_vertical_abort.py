"""A failed vertical run's abort goes to every node the coordinator addressed: a node whose
hello went unanswered is unknown to it (no verified party), yet may have started its session
all the same (a slow data load), which would otherwise live on until idle past the step
timeout. Nodes never addressed are left alone. The coordinator's ServerApp runs against an
in-process Grid: one node answers through the vertical ClientApp itself (signed replies, its
session in this process), the other never answers."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from flwr.app import Context, Message, RecordDict

from jointcredit.client import vertical_app
from jointcredit.federation import vertical as v
from jointcredit.federation.protocol import ProtocolError
from jointcredit.federation.vertical import VerticalSettings
from jointcredit.server import vertical_app as server
from jointcredit.server.errors import FederationError
from jointcredit.trust.keyset import TRUST_FILE, create_key_set

RUN = 77
BANK, PLATFORM, LATE = 7, 8, 9  # node ids (sorted: the order of the hellos)


class SilentPlatformGrid:
    """The bank's node answers through the vertical ClientApp; the platform's never does."""

    def __init__(self, run_config: dict[str, object]) -> None:
        self.run_config = run_config
        self.sent: list[tuple[int, str, str]] = []  # node, message type, action
        self._replies: dict[str, Message] = {}

    def get_node_ids(self) -> list[int]:
        return [BANK, PLATFORM, LATE]

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for m in messages:
            node = m.metadata.dst_node_id
            message_id = f"{len(self.sent)}-{node}"
            m.metadata.__dict__["_message_id"] = message_id
            m.metadata.__dict__["_run_id"] = RUN
            self.sent.append((node, m.metadata.message_type, str(v.request(m.content)[v.ACTION])))
            ids.append(message_id)
            if node != BANK:
                continue
            partition = {"partition-id": 0, "num-partitions": 2}  # the bank, simulated
            context = Context(RUN, node, partition, RecordDict(), dict(self.run_config))
            reply = vertical_app.app(m, context)
            reply.metadata.__dict__["_src_node_id"] = node
            self._replies[message_id] = reply
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]


@pytest.fixture
def run_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, object]]:
    monkeypatch.setattr(vertical_app, "_ABORTED", {})  # this test's aborts only
    keys_dir = tmp_path / "keys"
    create_key_set(keys_dir, ["bank", "platform"], federation="abort-test")
    settings = VerticalSettings.model_validate(
        {"synthetic-rows": 200, "keys-dir": str(keys_dir), "trust-file": str(keys_dir / TRUST_FILE),
         "out-dir": str(tmp_path / "out"), "parties": 3, "timeout": 1.0}
    )  # fmt: skip
    yield dict(settings.to_run_config())
    for key in vertical_app.sessions():  # whatever a failing test left
        vertical_app.drop(key, "test over")


@pytest.mark.usefixtures("task_identity")
def test_a_node_whose_hello_timed_out_is_sent_the_abort(run_config: dict[str, object]) -> None:
    grid = SilentPlatformGrid(run_config)
    context = Context(RUN, 0, {}, RecordDict(), dict(run_config))
    settings = VerticalSettings.of(dict(run_config), RUN)
    with pytest.raises(FederationError, match=rf"node {PLATFORM}: no reply within 1 s"):
        server._run(grid, context, settings)  # type: ignore[arg-type]
    assert grid.sent[:2] == [(BANK, v.HELLO, v.HELLO_ACTION), (PLATFORM, v.HELLO, v.HELLO_ACTION)]
    aborts = {node: kind for node, kind, action in grid.sent if action == v.ABORT}
    # The bank and the silent node (its party unknown), each by a message type a node takes
    # an abort in; the node never asked: nothing.
    assert set(aborts) == {BANK, PLATFORM}
    assert set(aborts.values()) <= {v.STEP, v.SERVE}
    assert (RUN, BANK) not in vertical_app.sessions()  # the bank dropped its session at once


def test_a_hello_still_under_way_when_the_abort_came_starts_no_session(
    run_config: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a deployed node a task per message runs at once: the abort can find no session
    because the hello that makes it is still loading. The hello is then refused when it
    ends, and a later message of the run too; another run is not affected."""
    partition = {"partition-id": 1, "num-partitions": 2}  # the platform, simulated

    def request(run: int, kind: str, content: RecordDict) -> vertical_app.Request:
        return vertical_app.Request(run, PLATFORM, kind, content, dict(run_config), partition)

    hello = v.content(1, v.HELLO_ACTION)
    loading, resume = threading.Event(), threading.Event()
    feature_session = vertical_app.FeatureSession

    def slow(*args: object) -> object:  # the hello's data load, held until the abort is in
        loading.set()
        resume.wait(30)
        return feature_session(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(vertical_app, "FeatureSession", slow)
    outcome: list[BaseException] = []

    def say_hello() -> None:
        try:
            vertical_app.handle(request(RUN, v.HELLO, hello))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=say_hello)
    thread.start()
    assert loading.wait(30)
    with pytest.raises(ProtocolError, match=f"no vertical session of run {RUN}"):
        vertical_app.handle(request(RUN, v.SERVE, v.content(9, v.ABORT)))
    resume.set()
    thread.join(30)
    assert [str(e) for e in outcome] == [
        f"run {RUN} was aborted by the coordinator: this node starts no session of it"
    ]
    assert (RUN, PLATFORM) not in vertical_app.sessions()
    with pytest.raises(RuntimeError, match=f"run {RUN} was aborted"):
        vertical_app.handle(request(RUN, v.HELLO, hello))
    monkeypatch.undo()
    reply = vertical_app.handle(request(RUN + 1, v.HELLO, hello))
    assert v.request(reply)[v.ROLE] == v.FEATURE_ROLE
