"""The audit log on PostgreSQL (the service's `--db postgresql+psycopg://...`): the same
chain, the same driver-level statements compiled for psycopg's paramstyle, `SELECT ... FOR
UPDATE` ordering two writers, tampering detected. A throwaway server is started from the
PostgreSQL binaries on this machine (skipped, saying so, where there are none)."""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_audit_writer import _batch, _decision, write_concurrently

from jointcredit.service.audit import AuditError, AuditLog, Entry, as_view
from jointcredit.service.records import derive_views
from jointcredit.service.writer import AuditWriter

pytestmark = pytest.mark.e2e


def _bin(name: str) -> str | None:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    return found


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    pytest.importorskip("psycopg")
    # Not under pytest's tmp_path: its parent is private to root, and the server runs as
    # `postgres`. Removed at the end.
    root = Path(tempfile.mkdtemp(prefix="jointcredit-pg-"))
    # PostgreSQL refuses to run as root: the cluster is owned by the `postgres` user.
    as_user: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL")
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _port()
    subprocess.run([*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    options = f"-p {port} -k {root} -c listen_addresses=''"
    start = [*as_user, pg_ctl, "-D", str(data), "-o", options, "-w", "-l", str(root / "log")]
    subprocess.run([*start, "start"], check=True, capture_output=True, timeout=120)
    try:
        yield f"postgresql+psycopg://postgres@/postgres?host={root}&port={port}"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "fast", "stop"],
                       capture_output=True, timeout=120)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


def test_chain_batches_reviews_and_tampering_on_postgres(pg_url: str) -> None:
    log = AuditLog(pg_url)
    assert not log.local  # appends leave the event loop (a database server: round trips)
    log.append(_decision(1))
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
        conn.exec_driver_sql("DROP TABLE decisions, audit_log, chain_head")
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
    for log in logs:
        log.close()
