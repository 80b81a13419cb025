"""Group commit of the audit log: concurrent requests share transactions, each gets its own
sequence numbers, the chain stays intact, and a failed transaction fails its whole group
without stopping the writer."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from jointcredit.service.audit import AuditLog, AuditWriter, Entry, View, now


def _decision(i: int) -> tuple[list[Entry], list[View | None]]:
    decision_id = f"d{i:04d}"
    response = {"status": "decided", "decision": "approve", "i": i}
    entry = Entry("decision", decision_id, "bank-a", {"response": response})
    at = now()
    view: View = {
        "decision_id": decision_id, "institution": "bank-a", "status": "decided",
        "decision": "approve", "final_decision": "approve", "created_at": at,
        "updated_at": at, "response": json.dumps(response),
    }  # fmt: skip
    return [entry], [view]


def test_concurrent_appends_share_commits_and_keep_the_chain(tmp_path: Path) -> None:
    log = AuditLog(f"sqlite:///{tmp_path / 'a.sqlite'}")
    writer = AuditWriter(log)

    async def main() -> list[list[int]]:
        seqs = await asyncio.gather(*(writer.append(*_decision(i)) for i in range(200)))
        await writer.close()
        return list(seqs)

    seqs = asyncio.run(main())
    assert sorted(s for group in seqs for s in group) == list(range(1, 201))
    assert writer.groups < 20  # 200 waiting requests, a handful of transactions
    assert log.verify()[0] == 200
    # Each request got the sequence number of its own entry.
    for i, group in enumerate(seqs):
        row = log.get(f"d{i:04d}")
        assert row is not None and [row.last_seq] == group


def test_a_failed_commit_fails_its_group_and_the_writer_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = AuditLog(f"sqlite:///{tmp_path / 'a.sqlite'}")
    writer = AuditWriter(log)
    real = log.append
    calls = {"n": 0}

    def flaky(entries: list[Entry], views: list[Any]) -> list[int]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("disk full")
        return real(entries, views)

    monkeypatch.setattr(log, "append", flaky)

    async def main() -> tuple[list[Any], list[int]]:
        first = await asyncio.gather(
            *(writer.append(*_decision(i)) for i in range(5)), return_exceptions=True
        )
        after = await writer.append(*_decision(99))
        await writer.close()
        return list(first), after

    first, after = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in first)  # none of them was audited
    assert after == [1]  # nothing of the failed group reached the chain
    assert log.verify()[0] == 1


def test_two_service_processes_on_one_database_keep_one_chain(tmp_path: Path) -> None:
    # Two AuditLog objects stand for two processes: neither's in-process lock covers the other.
    import threading

    url = f"sqlite:///{tmp_path / 'a.sqlite'}"
    logs = [AuditLog(url), AuditLog(url)]
    errors: list[BaseException] = []

    def write(log: AuditLog, base: int) -> None:
        try:
            for i in range(100):
                log.append(*_decision(base + i))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(log, 1000 * k)) for k, log in enumerate(logs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert logs[0].verify()[0] == 200
