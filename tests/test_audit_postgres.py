"""The audit log on PostgreSQL (the service's `--db postgresql+psycopg://...`): the same
chain, the same driver-level statements compiled for psycopg's paramstyle, `SELECT ... FOR
UPDATE` ordering two writers, tampering detected. A throwaway server is started from the
PostgreSQL binaries on this machine (skipped, saying so, where there are none)."""

from __future__ import annotations

import asyncio

import pytest
from test_audit_writer import _batch, _decision, write_concurrently

from jointcredit.service.audit import AuditError, AuditLog, Entry, as_view
from jointcredit.service.consent import ConsentError, ConsentRegistry, check_consents
from jointcredit.service.records import derive_views
from jointcredit.service.writer import AuditWriter

pytestmark = pytest.mark.e2e


def test_chain_batches_reviews_and_tampering_on_postgres(pg_url: str) -> None:
    log = AuditLog(pg_url)
    assert not log.local  # appends leave the event loop (a database server: round trips)
    log.append(_decision(1, referred=True))
    log.append(_batch(2, 50))
    decided = log.get("d0001")
    assert decided is not None
    review = {**as_view(decided), "status": "decided", "final_decision": "approve"}
    log.append([Entry("review", "d0001", "bank-a", {"final_decision": "approve"}, (review,))])
    assert log.verify(derive_views)[0] == 3
    row = log.get("b0002-0049")
    assert row is not None and row.last_seq == 2
    with log.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE audit_log SET institution = 'bank-b' WHERE seq = 2")
    with pytest.raises(AuditError, match="row 2"):
        log.verify(derive_views)
    with log.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE audit_log SET institution = 'bank-a' WHERE seq = 2")
    assert log.verify(derive_views)[0] == 3
    log.close()


def test_two_writers_and_the_group_commit_keep_one_chain_on_postgres(pg_url: str) -> None:
    with AuditLog(pg_url).engine.begin() as conn:  # a fresh chain for this test
        conn.exec_driver_sql("DROP TABLE consents, decisions, audit_log, chain_head")
    logs = [AuditLog(pg_url), AuditLog(pg_url)]  # two "processes": FOR UPDATE orders them
    write_concurrently(logs, 60)
    writer = AuditWriter(logs[0])

    async def main() -> list[list[int]]:
        seqs = await asyncio.gather(*(writer.append(_decision(5000 + i)) for i in range(40)))
        await writer.close()
        return list(seqs)

    seqs = asyncio.run(main())
    assert sorted(s for group in seqs for s in group) == list(range(121, 161))
    assert logs[0].verify(derive_views)[0] == 160
    # The consent registry's chained changes, from both "processes".
    added = ConsentRegistry(logs[0]).add("bank-a", "c1", "TIN-1", "exposure")
    assert added.revoked_at is None
    assert ConsentRegistry(logs[1]).revoke("bank-a", "c1").revoked_at is not None
    with pytest.raises(ConsentError, match="already revoked"):
        ConsentRegistry(logs[0]).revoke("bank-a", "c1")
    assert ConsentRegistry(logs[0]).problems("bank-a", [("c1", "TIN-1")], "exposure") == ["revoked"]
    assert logs[0].verify(derive_views)[0] == 162 and check_consents(logs[0]) == 1
    for log in logs:
        log.close()
