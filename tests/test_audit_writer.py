"""Group commit of the audit log: concurrent requests share transactions, each gets its own
sequence numbers, the chain stays intact, and a failed transaction fails its whole group
without stopping the writer."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from jointcredit.service.audit import AuditError, AuditLog, Busy, Entry, ViewRow
from jointcredit.service.chain import now
from jointcredit.service.records import derive_views
from jointcredit.service.writer import AuditWriter


def _view(decision_id: str, response: dict[str, Any]) -> ViewRow:
    at = now()
    return {
        "decision_id": decision_id, "institution": "bank-a", "status": "decided",
        "decision": "approve", "final_decision": "approve", "created_at": at,
        "updated_at": at, "response": json.dumps(response),
    }  # fmt: skip


def _decision(i: int, *, referred: bool = False) -> list[Entry]:
    """An approval, or with `referred` a referral awaiting review (what a review resolves)."""
    decision_id = f"d{i:04d}"
    status, decision = ("under_review", "refer") if referred else ("decided", "approve")
    response = {"decision_id": decision_id, "status": status, "decision": decision, "i": i}
    view = {**_view(decision_id, response), "status": status, "decision": decision,
            "final_decision": None if referred else decision}  # fmt: skip
    return [Entry("decision", decision_id, "bank-a", {"response": response}, (view,))]


def _batch(i: int, n: int) -> list[Entry]:
    records, views = [], []
    for k in range(n):
        decision_id = f"b{i:04d}-{k:04d}"
        response = {"decision_id": decision_id, "status": "decided", "decision": "approve"}
        records.append({"response": response})
        views.append(_view(decision_id, response))
    return [Entry("batch", f"batch-{i}", "bank-a", {"decisions": records}, tuple(views))]


def test_concurrent_appends_share_commits_and_keep_the_chain(tmp_path: Path) -> None:
    log = AuditLog(f"sqlite:///{tmp_path / 'a.sqlite'}")
    writer = AuditWriter(log)

    async def main() -> list[list[int]]:
        seqs = await asyncio.gather(*(writer.append(_decision(i)) for i in range(200)))
        await writer.close()
        return list(seqs)

    seqs = asyncio.run(main())
    assert sorted(s for group in seqs for s in group) == list(range(1, 201))
    assert writer.groups < 20  # 200 waiting requests, a handful of transactions
    assert log.verify(derive_views)[0] == 200
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

    def flaky(entries: list[Entry], *, wait: bool = True) -> list[int]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("disk full")
        return real(entries, wait=wait)

    monkeypatch.setattr(log, "append", flaky)

    async def main() -> tuple[list[Any], list[int]]:
        first = await asyncio.gather(
            *(writer.append(_decision(i)) for i in range(5)), return_exceptions=True
        )
        after = await writer.append(_decision(99))
        await writer.close()
        return list(first), after

    first, after = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in first)  # none of them was audited
    assert after == [1]  # nothing of the failed group reached the chain
    assert log.verify(derive_views)[0] == 1


def write_concurrently(logs: list[AuditLog], per_log: int) -> None:
    """Each log appends `per_log` decisions from its own thread, all at once."""
    import threading

    errors: list[BaseException] = []

    def write(log: AuditLog, base: int) -> None:
        try:
            for i in range(per_log):
                log.append(_decision(base + i))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(log, 1000 * k)) for k, log in enumerate(logs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]


@pytest.mark.e2e
def test_two_service_processes_on_one_database_keep_one_chain(tmp_path: Path) -> None:
    # Two AuditLog objects stand for two processes: neither's in-process lock covers the other.
    url = f"sqlite:///{tmp_path / 'a.sqlite'}"
    logs = [AuditLog(url), AuditLog(url)]
    write_concurrently(logs, 100)
    assert logs[0].verify(derive_views)[0] == 200


def test_a_batch_is_one_chain_row_and_verify_checks_each_of_its_decisions(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.sqlite"
    log = AuditLog(f"sqlite:///{path}")
    log.append(_decision(1))
    assert log.append(_batch(2, 300)) == [2]  # 300 decisions, one chained row
    log.append(_decision(3))
    assert log.verify(derive_views) == log.head() and log.head()[0] == 3
    row = log.get("b0002-0123")
    assert row is not None and row.last_seq == 2
    con = sqlite3.connect(path)
    # A decision of the batch edited in the log: the batch row's hash breaks.
    payload = con.execute("SELECT payload FROM audit_log WHERE seq = 2").fetchone()[0]
    con.execute(
        "UPDATE audit_log SET payload = ? WHERE seq = 2",
        (payload.replace('"approve"', '"decline"', 1),),
    )
    con.commit()
    with pytest.raises(AuditError, match=r"row 2 .*edited"):
        log.verify(derive_views)
    con.execute("UPDATE audit_log SET payload = ? WHERE seq = 2", (payload,))
    # One of its decisions deleted from the current view: named.
    con.execute("DELETE FROM decisions WHERE decision_id = 'b0002-0200'")
    con.commit()
    with pytest.raises(AuditError, match="b0002-0200"):
        log.verify(derive_views)
    con.close()


def test_a_busy_lock_moves_the_wait_off_the_event_loop(tmp_path: Path) -> None:
    """Another process holding the SQLite write lock: `wait=False` refuses at once and writes
    nothing; the writer then waits in a thread and the append lands."""
    import fcntl

    path = tmp_path / "a.sqlite"
    log = AuditLog(f"sqlite:///{path}")
    other = open(f"{path}.lock", "ab")  # noqa: SIM115 (a second open file: another process)
    fcntl.flock(other, fcntl.LOCK_EX)
    with pytest.raises(Busy):
        log.append(_decision(1), wait=False)
    assert log.head()[0] == 0
    writer = AuditWriter(log)

    async def main() -> list[int]:
        task = asyncio.ensure_future(writer.append(_decision(2)))
        await asyncio.sleep(0.2)
        assert not task.done()  # waiting for the lock, in a thread: the loop still runs
        fcntl.flock(other, fcntl.LOCK_UN)
        seqs = await task
        await writer.close()
        return seqs

    assert asyncio.run(main()) == [1]
    other.close()
    assert log.verify(derive_views)[0] == 1


def test_the_wal_stays_bounded_under_steady_appends(tmp_path: Path) -> None:
    """Back-to-back appends starve passive checkpoints (the WAL never restarts from its
    beginning, so it grows with everything appended): past its limit an append restarts it
    (or truncates it, when it has grown to 4x the limit before the checkpointer noticed).
    ~40 MB appended against a 1 MB limit."""
    log = AuditLog(f"sqlite:///{tmp_path / 'a.sqlite'}", wal_limit=1 << 20)
    checkpointer = log.checkpointer
    assert checkpointer is not None
    checkpointer.interval = 0.02
    wal = tmp_path / "a.sqlite-wal"
    peak = 0
    for i in range(800):
        batch = _batch(i, 1)[0]
        payload = {**batch.payload, "filler": f"{i:06d}" * 8_000}  # ~48 kB per append
        log.append([Entry(batch.kind, batch.decision_id, batch.institution, payload, batch.views)])
        peak = max(peak, wal.stat().st_size)
        if i % 20 == 0:
            time.sleep(0.03)  # let the checkpointer look
    assert checkpointer.restarts >= 5
    # The truncation bound is 4x the limit, but the file can pass it by what is appended
    # before the checkpointer thread next looks (more on a loaded machine); without restarts
    # the WAL holds most of what was appended. 8 MB lies well between the two.
    assert peak < 8 << 20, peak
    assert log.verify(derive_views)[0] == 800
    log.close()
