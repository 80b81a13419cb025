"""InstitutionGrid: replies ordered by institution, recorded per institution."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from grid_helpers import AnsweringGrid

from jointcredit.server.errors import FederationError
from jointcredit.server.grid import InstitutionGrid, nan_weighted_mean, short_reason
from jointcredit.server.verify import UpdateVerifier
from jointcredit.trust.keyset import create_key_set


def answers_as(names: dict[int, str]) -> AnsweringGrid:
    """Every node answers, in reverse order, as institutions z..a would."""

    def answer(m: Message) -> RecordDict:
        node = m.metadata.dst_node_id
        return RecordDict(
            {
                "metrics": MetricRecord(
                    {"auc": 0.5 + node / 100, "ks": 0.1, "brier": 0.2, "num-examples": 10}
                ),
                "identity": ConfigRecord({"institution": names[node]}),
            }
        )

    return AnsweringGrid(answer, reverse=True)


@pytest.mark.usefixtures("task_identity")
def test_replies_are_sorted_and_recorded_per_institution() -> None:
    names = {1: "zeta-bank", 2: "alpha-bank", 3: "mid-lender"}
    grid = InstitutionGrid(answers_as(names))  # type: ignore[arg-type]
    cfg = ConfigRecord({"server-round": 4})
    msgs = [
        Message(RecordDict({"config": cfg}), dst_node_id=n, message_type=MessageType.EVALUATE)
        for n in (1, 2, 3)
    ]
    replies = list(grid.send_and_receive(msgs))
    order = [str(r.content["identity"]["institution"]) for r in replies]
    assert order == ["alpha-bank", "mid-lender", "zeta-bank"]
    ex = grid.exchanges[-1]
    assert ex.server_round == 4 and ex.message_type == MessageType.EVALUATE
    assert ex.metrics["alpha-bank"]["auc"] == pytest.approx(0.52)
    assert grid.node_institution == {1: "zeta-bank", 2: "alpha-bank", 3: "mid-lender"}


@pytest.mark.usefixtures("task_identity")
def test_too_few_verified_replies_fail_the_round_naming_each_reason(tmp_path: Path) -> None:
    names = {1: "zeta-bank", 2: "alpha-bank", 3: "mid-lender"}
    trust = create_key_set(tmp_path, sorted(names.values()), federation="t")
    grid = InstitutionGrid(
        answers_as(names),  # type: ignore[arg-type]
        UpdateVerifier(trust, run_id=7),
        min_valid_fraction=0.5,
    )
    cfg = ConfigRecord({"server-round": 2})
    msgs = [
        Message(RecordDict({"config": cfg}), dst_node_id=n, message_type=MessageType.TRAIN)
        for n in (1, 2, 3)
    ]
    with pytest.raises(FederationError) as info:
        grid.send_and_receive(msgs)
    text = str(info.value)
    assert "round 2 train: 0 valid replies of 3, 2 needed" in text
    assert all(f"{n}: unsigned: the reply carries no signature" in text for n in names.values())
    assert grid.exchanges[-1].rejected.keys() == set(names.values())


def test_nan_weighted_mean_skips_undefined_metrics() -> None:
    rows = [
        {"auc": 0.8, "brier": 0.1, "num-examples": 100.0},
        {"auc": math.nan, "brier": 0.3, "num-examples": 300.0},
    ]
    mean = nan_weighted_mean(rows, "num-examples")
    assert mean["auc"] == pytest.approx(0.8)
    assert mean["brier"] == pytest.approx(0.25)
    assert mean["num-examples"] == 400


def test_short_reason_unwraps_flower_client_exceptions() -> None:
    wrapped = (
        "<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'\x1b[36mray::run()\x1b[39m\n"
        "  File x, line 3\nValueError: inner\n\nException ClientAppException occurred. "
        "Message: file bank.csv, column 'age': non-numeric value 'x'\n'>"
    )
    assert short_reason(wrapped) == "file bank.csv, column 'age': non-numeric value 'x'"
    assert short_reason(None) == "error without a reason"
    assert short_reason("plain failure") == "plain failure"


class _SlowGrid(AnsweringGrid):
    """Each reply is ready only after a few pulls (a node still working), one at a time."""

    def __init__(self, inner: AnsweringGrid, pulls_per_reply: int) -> None:
        super().__init__(inner.answer, reverse=inner.reverse)
        self.pulls_per_reply = pulls_per_reply
        self.pulls = 0

    def pull_messages(self, message_ids: object) -> list[Message]:
        self.pulls += 1
        ids = list(message_ids)  # type: ignore[call-overload]
        if self.pulls % self.pulls_per_reply or not ids:
            return []
        return super().pull_messages(ids[:1])


@pytest.mark.usefixtures("task_identity")
def test_replies_are_pulled_promptly_until_all_arrive_or_the_timeout() -> None:
    import time

    names = {1: "zeta-bank", 2: "alpha-bank", 3: "mid-lender"}
    slow = _SlowGrid(answers_as(names), pulls_per_reply=4)
    grid = InstitutionGrid(slow)  # type: ignore[arg-type]
    cfg = ConfigRecord({"server-round": 1})
    msgs = [
        Message(RecordDict({"config": cfg}), dst_node_id=n, message_type=MessageType.EVALUATE)
        for n in names
    ]
    started = time.monotonic()
    replies = list(grid.send_and_receive(msgs, timeout=60))
    # Flower's own loop sleeps 0.1 s (simulation) or 3 s (network) between pulls: 12 pulls
    # would take 1.1 s or 33 s; backing off from a millisecond takes a few hundredths.
    assert len(replies) == 3 and slow.pulls == 12
    assert time.monotonic() - started < 0.5
    stuck = _SlowGrid(answers_as(names), pulls_per_reply=10**9)
    started = time.monotonic()
    with pytest.raises(FederationError, match="no reply before the timeout"):
        InstitutionGrid(stuck).send_and_receive(msgs, timeout=0.3)  # type: ignore[arg-type]
    assert 0.3 <= time.monotonic() - started < 1.0
