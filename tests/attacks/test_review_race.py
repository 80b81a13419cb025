"""Attack: conflicting review outcomes (issue 19, item 1). Eight reviewers resolving one
referral at once, alternating approve and decline, must yield exactly one outcome: one 200,
every other 409, one review in the chain, `audit verify` OK. Reproduced on the store (several
writers of one SQLite file, one group commit holding two reviews) and through the HTTP app."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from service_helpers import audit_verify
from service_helpers import signed_artifact as _artifact

from jointcredit.service.app import create_app
from jointcredit.service.audit import AuditLog, Entry, ViewRow
from jointcredit.service.auth import new_key
from jointcredit.service.chain import now
from jointcredit.service.loader import load_service
from jointcredit.service.records import derive_views


def _referral(decision_id: str) -> Entry:
    at = now()
    response = {"decision_id": decision_id, "status": "under_review", "decision": "refer"}
    view: ViewRow = {
        "decision_id": decision_id, "institution": "bank-a", "status": "under_review",
        "decision": "refer", "final_decision": None, "created_at": at, "updated_at": at,
        "response": json.dumps(response),
    }  # fmt: skip
    return Entry("decision", decision_id, "bank-a", {"response": response}, (view,))


def _review(log: AuditLog, decision_id: str, outcome: str) -> Entry:
    row = log.get(decision_id)
    assert row is not None and row.status == "under_review"  # each reviewer saw it open
    at = now()
    view: ViewRow = {
        "decision_id": decision_id, "institution": row.institution, "status": "decided",
        "decision": row.decision, "final_decision": outcome, "created_at": row.created_at,
        "updated_at": at, "response": row.response,
    }  # fmt: skip
    return Entry("review", decision_id, "bank-a", {"final_decision": outcome}, (view,))


def _reviews_in_chain(log: AuditLog) -> list[str]:
    return [json.loads(r.payload)["final_decision"] for r in log.rows() if r.kind == "review"]


def test_two_reviews_in_one_group_commit_give_one_outcome(tmp_path: Path) -> None:
    log = AuditLog(f"sqlite:///{tmp_path / 'a.sqlite'}")
    log.append([_referral("r1")])
    both = [_review(log, "r1", "approve"), _review(log, "r1", "decline")]
    assert log.append(both) == [2, None]
    assert log.append([_review_after(log, "r1")]) == [None]  # already decided: not written
    assert _reviews_in_chain(log) == ["approve"]
    assert log.verify(derive_views)[0] == 2
    log.close()


def _review_after(log: AuditLog, decision_id: str) -> Entry:
    """A review built from a stale read (the referral as it was before it was decided)."""
    row = log.get(decision_id)
    assert row is not None
    return Entry("review", decision_id, "bank-a", {"final_decision": "decline"},
                 ({"decision_id": decision_id, "status": "decided", "final_decision": "decline",
                   "updated_at": now()},))  # fmt: skip


def _race(url: str, decision_id: str, writers: int = 4) -> None:
    """`writers` separate AuditLog objects (standing for service processes on one database)
    review one referral at the same moment; exactly one review may land."""
    logs = [AuditLog(url) for _ in range(writers)]
    logs[0].append([_referral(decision_id)])
    entries = [
        _review(log, decision_id, ("approve", "decline")[k % 2]) for k, log in enumerate(logs)
    ]
    barrier = threading.Barrier(len(logs))
    seqs: list[int | None] = [None] * len(logs)

    def review(k: int) -> None:
        barrier.wait()
        (seqs[k],) = logs[k].append([entries[k]])

    threads = [threading.Thread(target=review, args=(k,)) for k in range(len(logs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(s is not None for s in seqs) == 1
    landed = [r for r in logs[0].rows() if r.kind == "review" and r.decision_id == decision_id]
    assert len(landed) == 1
    logs[0].verify(derive_views)
    for log in logs:
        log.close()


def test_reviewers_in_several_processes_give_one_outcome(tmp_path: Path) -> None:
    _race(f"sqlite:///{tmp_path / 'a.sqlite'}", "r1")


@pytest.mark.e2e
def test_reviewers_on_postgres_give_one_outcome(pg_url: str) -> None:
    _race(pg_url, "r-pg-1")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, Any]]:
    keys_file = tmp_path / "api-keys.json"
    key = new_key(keys_file, "bank-a")
    db = f"sqlite:///{tmp_path / 'audit.sqlite'}"
    service = load_service(_artifact(tmp_path), tmp_path / "trust.json", api_keys=keys_file,
                           db_url=db)  # fmt: skip
    with TestClient(create_app(service), raise_server_exceptions=False) as client:
        yield {"client": client, "headers": {"Authorization": f"Bearer {key}"}, "db": db}


@pytest.mark.integration
def test_eight_concurrent_http_reviews_of_one_referral_give_one_outcome(
    served: dict[str, Any],
) -> None:
    client, headers = served["client"], served["headers"]
    spec = client.get("/openapi.json").json()
    body = spec["components"]["schemas"]["DecisionRequest"]["examples"][0]
    body["context"] = {"online_activity_share": 0.1}  # thin file: always referred
    referred = client.post("/v1/decisions", json=body, headers=headers).json()
    assert referred["status"] == "under_review"
    url = f"/v1/reviews/{referred['decision_id']}"
    # Every request in flight at once on the app's own event loop (the one TestClient runs
    # the lifespan on), so each can pass the status check before any is written.
    outcomes = [("approve", "decline")[k % 2] for k in range(8)]

    async def burst() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as ac:
            return list(await asyncio.gather(*(
                ac.post(url, json={"final_decision": o, "reviewer": "r", "note": "n"},
                        headers=headers)
                for o in outcomes
            )))  # fmt: skip

    assert client.portal is not None
    answers = client.portal.call(burst)
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] + [409] * 7, [a.text for a in answers]
    winner = next(a.json()["final_decision"] for a in answers if a.status_code == 200)
    log = AuditLog(served["db"], create=False)
    assert _reviews_in_chain(log) == [winner]
    row = log.get(referred["decision_id"])
    assert row is not None and row.final_decision == winner
    log.close()
    ok = audit_verify(served["db"])
    assert ok.exit_code == 0 and "OK" in ok.stdout, ok.stderr
