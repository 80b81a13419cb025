"""The audit chain on its own (service/chain.py: links, hashes, replay through a callback that
knows nothing of decisions) and the store's checks around it: the head, and the current view
against what the chain implies."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from test_audit_writer import _decision

from jointcredit.service.audit import AuditLog, Entry
from jointcredit.service.chain import (
    GENESIS,
    AuditError,
    Link,
    View,
    canonical,
    chain_hash,
    walk,
)
from jointcredit.service.records import derive_views


def _links(n: int) -> list[Link]:
    links, prev = [], GENESIS
    for seq in range(1, n + 1):
        payload = canonical({"n": seq, "decision": "approve"})
        digest = chain_hash(prev, seq, "note", f"id{seq}", "bank-a", "t", payload)
        links.append(Link(seq, "note", f"id{seq}", "bank-a", "t", payload, prev, digest))
        prev = digest
    return links


def _count(kind: str, decision_id: str, payload: dict[str, Any], seq: int,
           views: Mapping[str, View]) -> dict[str, View]:  # fmt: skip
    return {decision_id: {"seen": payload["n"], "last_seq": seq}}


def test_canonical_text_is_sorted_and_compact() -> None:
    assert canonical({"b": 1, "a": [1.5, "é"]}) == '{"a":[1.5,"é"],"b":1}'


def test_walk_replays_through_the_callback() -> None:
    seq, head, views = walk(_links(5), _count)
    assert seq == 5 and head == _links(5)[-1].hash
    assert views["id3"] == {"seen": 3, "last_seq": 3}
    assert walk([], _count) == (0, GENESIS, {})


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda ls: [*ls[:2], dataclasses.replace(ls[2], payload=ls[2].payload.replace(
            "approve", "decline")), *ls[3:]], r"row 3 \(note id3\): edited"),
        (lambda ls: [*ls[:2], dataclasses.replace(ls[2], institution="bank-b"), *ls[3:]],
         "row 3 .*edited"),
        (lambda ls: [*ls[:2], *ls[3:]], "row 3 is missing"),
        (lambda ls: [ls[0], ls[2], ls[1], *ls[3:]], "row 2 is missing"),
        (lambda ls: [*ls[:2], dataclasses.replace(ls[2], prev_hash=GENESIS), *ls[3:]],
         "row 3: previous-hash link broken"),
    ],
)  # fmt: skip
def test_walk_names_the_first_broken_row(tamper: Any, message: str) -> None:
    with pytest.raises(AuditError, match=message):
        walk(tamper(_links(5)), _count)


def test_a_review_of_an_unknown_decision_breaks_the_replay() -> None:
    with pytest.raises(AuditError, match="row 7: a review of a decision the log does not have"):
        derive_views("review", "nope", {"final_decision": "approve"}, 7, {})


def test_the_store_checks_the_head_and_the_view(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    log = AuditLog(f"sqlite:///{path}")
    for i in range(3):
        log.append(_decision(i, referred=i == 1))
    row = log.get("d0001")
    assert row is not None
    log.append([Entry("review", "d0001", "bank-a", {"final_decision": "decline"},
                      ({**_view_of(log, "d0001"), "status": "decided",
                        "final_decision": "decline"},))])  # fmt: skip
    assert log.verify(derive_views) == log.head() and log.head()[0] == 4
    con = sqlite3.connect(path)
    con.execute("UPDATE decisions SET final_decision = 'approve' WHERE decision_id = 'd0001'")
    con.commit()
    with pytest.raises(AuditError, match=r"decision d0001: .*\['final_decision'\]"):
        log.verify(derive_views)
    con.execute("UPDATE decisions SET final_decision = 'decline' WHERE decision_id = 'd0001'")
    con.execute("DELETE FROM audit_log WHERE seq = 4")  # the newest row: links still hold
    con.commit()
    with pytest.raises(AuditError, match="chain head says row 4, the log ends at row 3"):
        log.verify(derive_views)
    con.close()
    log.close()


def _view_of(log: AuditLog, decision_id: str) -> dict[str, Any]:
    from jointcredit.service.audit import as_view

    row = log.get(decision_id)
    assert row is not None
    return as_view(row)
