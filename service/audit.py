"""The decision log's store: every decision and every review, appended to a hash chain
(SQLAlchemy; a SQLite file by default, PostgreSQL by URL).

`AuditLog` appends entries (each a chained `audit_log` row plus the `decisions` view rows it
adds or changes) in one transaction, answers the API's reads, and checks the whole log
(`verify`: the chain's links, its head, and the view against what the chain implies). What an
entry's payload means is not its business: the layer that writes entries supplies the callback
that derives view rows from them (service/chain.py).

A hash chain proves nothing against someone who rewrites the whole chain consistently: export
the head hash (`/readyz`, `audit verify`) to somewhere they cannot write.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, insert, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from jointcredit.service import sqlite
from jointcredit.service.chain import (
    GENESIS,
    AuditError,
    Derive,
    Link,
    canonical,
    chain_hash,
    now,
    walk,
)
from jointcredit.service.sqlite import Busy, LockTimeout
from jointcredit.service.statements import Statements
from jointcredit.service.tables import AuditRow, Base, ChainHead, DecisionRow, ViewRow, as_view

__all__ = ["AuditError", "AuditLog", "Busy", "DecisionRow", "Entry", "LockTimeout", "ViewRow",
           "as_view"]  # fmt: skip

# How long an append waits for the write lock another process holds before giving up (the
# request gets 503): a commit holds it for milliseconds, a stuck process for ever.
LOCK_TIMEOUT = 5.0


@dataclass(frozen=True)
class Entry:
    """One chain row: its kind, the decision (or batch) it is about, who asked, its payload,
    and the `decisions` rows it adds (`review`: the rows it updates)."""

    kind: str  # "decision" | "batch" | "review" | "consent"
    decision_id: str  # a batch: the batch's own id; a consent: the consent's id
    institution: str
    payload: dict[str, Any]
    views: tuple[ViewRow, ...] = ()
    # A consent entry's `consents` row: all its columns but `last_seq` (an add), or only
    # `institution`, `consent_id` and `revoked_at` (a revoke).
    consent: dict[str, Any] | None = None


class AuditLog:
    def __init__(
        self, url: str, *, create: bool = True, wal_limit: int = 256 << 20,
        lock_timeout: float = LOCK_TIMEOUT,
    ) -> None:  # fmt: skip
        self.url = url
        self.lock_timeout = lock_timeout
        if not create and url.startswith("sqlite:///"):
            path = url.removeprefix("sqlite:///")
            if not Path(path).is_file():
                raise AuditError(f"no audit log at {url}")
        self.engine: Engine = create_engine(url, future=True)
        database = self.engine.url.database
        is_file = self.engine.dialect.name == "sqlite" and database not in (None, "", ":memory:")
        if is_file and create:
            sqlite.private_database(str(database))
        self._sqlite = self.engine.dialect.name == "sqlite"
        # Appends read the chain head and write after it: they must hold the database's write
        # lock from the start, or two service processes on one database read the same head.
        self._writes: Engine = self.engine
        self._writes_now: Engine = self.engine  # non-waiting appends (on the event loop)
        if self._sqlite:
            sqlite.configure(self.engine)
            self._writes = sqlite.write_engine(url, lock_timeout)
            self._writes_now = sqlite.write_engine(url, 0.0)
        if create:
            Base.metadata.create_all(self.engine)
            # The head row exists from the start: `SELECT ... FOR UPDATE` on an empty table
            # locks nothing, and two first appends would both write row 1.
            try:
                with self.engine.begin() as conn:
                    if conn.execute(select(ChainHead.id)).first() is None:
                        conn.execute(insert(ChainHead).values(id=1, seq=0, hash=GENESIS))
            except IntegrityError:
                pass  # another process created it first
        elif not inspect(self.engine).has_table(AuditRow.__tablename__):
            raise AuditError(f"{url} holds no jointcredit audit log")
        # One writer at a time within this process (the database lock orders processes).
        self._lock = threading.Lock()
        self._sql = Statements(self._writes.dialect)
        self.file_lock: sqlite.FileLock | None = None
        self.checkpointer: sqlite.Checkpointer | None = None
        if is_file:
            self.file_lock = sqlite.FileLock(f"{database}.lock")
            self.checkpointer = sqlite.Checkpointer(
                self.engine, Path(f"{database}-wal"), wal_limit=wal_limit
            )

    @property
    def local(self) -> bool:
        """Appends touch only a local file (SQLite), no database server: see AuditWriter."""
        return self._sqlite

    def head(self) -> tuple[int, str]:
        with Session(self.engine) as s:
            head = s.get(ChainHead, 1)
            return (head.seq, head.hash) if head else (0, GENESIS)

    def append(self, entries: list[Entry], *, wait: bool = True) -> list[int | None]:
        """Append entries (and their view rows) in one transaction; returns their seqs.
        A review of a decision that is no longer awaiting review when the transaction reads it
        (another review, in this group or committed by any process, came first) is not written:
        its seq is None; so is a consent added under an id the institution already used, or a
        revoke of a consent it does not have or has revoked. `wait=False`: raise Busy instead
        of waiting for another writer;
        otherwise LockTimeout after waiting about `lock_timeout` seconds for it."""
        with self._holding(wait, self.lock_timeout):
            return self._append(entries, wait)

    @contextlib.contextmanager
    def _holding(self, wait: bool, timeout: float) -> Iterator[None]:
        """This process's writer lock, then the file lock that orders processes."""
        deadline = time.monotonic() + timeout
        if not self._lock.acquire(blocking=wait, timeout=timeout if wait else -1):
            if not wait:
                raise Busy("another append of this process is running")
            raise LockTimeout(f"the audit log's writer stayed busy for {timeout:g} s")
        try:
            if self.file_lock is None:
                yield
                return
            with self.file_lock.hold(wait, max(0.0, deadline - time.monotonic())):
                yield
        finally:
            self._lock.release()

    def writable(self, timeout: float) -> bool:
        """Whether an append could take the database's write lock within `timeout` seconds
        (taken and released at once; nothing is written). For readiness."""
        try:
            with self._holding(True, timeout):
                raw = self._writes.raw_connection()
                try:
                    cur = raw.cursor()
                    self._begin(cur, timeout)
                    raw.rollback()
                finally:
                    raw.close()
        except LockTimeout:
            return False
        except Exception as exc:
            if _lock_stayed_taken(exc):
                return False
            raise
        return True

    def _begin(self, cur: Any, timeout: float) -> None:
        """Open the write transaction, waiting at most `timeout` s for the write lock."""
        if self._sqlite:
            cur.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            try:
                sqlite.begin(cur)
            finally:
                cur.execute(f"PRAGMA busy_timeout = {int(self.lock_timeout * 1000)}")
            return
        cur.execute(f"SET LOCAL lock_timeout = {int(timeout * 1000)}")
        cur.execute(self._sql.head.sql)  # FOR UPDATE: the lock every appender takes

    def _append(self, entries: list[Entry], wait: bool) -> list[int | None]:
        sql = self._sql
        raw = (self._writes if wait else self._writes_now).raw_connection()
        try:
            cur = raw.cursor()
            if self._sqlite:
                sqlite.begin(cur)
            else:
                cur.execute(f"SET LOCAL lock_timeout = {int(self.lock_timeout * 1000)}")
            cur.execute(sql.head.sql)
            found = cur.fetchone()
            seq, prev = (int(found[0]), str(found[1])) if found else (0, GENESIS)
            log_rows: list[Any] = []
            new_views: list[Any] = []
            changed_views: list[Any] = []
            seqs: list[int | None] = []
            reviewed: set[str] = set()
            consents: list[tuple[Any, Any]] = []
            for entry in entries:
                if entry.kind == "review":
                    if not self._awaits_review(cur, entry.decision_id, reviewed):
                        seqs.append(None)
                        continue
                    reviewed.add(entry.decision_id)
                if entry.consent is not None:
                    if not self._consent_applies(cur, entry.consent, reviewed):
                        seqs.append(None)
                        continue
                    reviewed.add(f"{entry.institution}\0{entry.decision_id}")
                seq += 1
                created = now()
                payload = canonical(entry.payload)
                digest = chain_hash(
                    prev, seq, entry.kind, entry.decision_id, entry.institution, created,
                    payload,
                )  # fmt: skip
                log_rows.append(
                    sql.log.params(
                        {"seq": seq, "kind": entry.kind, "decision_id": entry.decision_id,
                         "institution": entry.institution, "created_at": created,
                         "payload": payload, "prev_hash": prev, "hash": digest}
                    )
                )  # fmt: skip
                if entry.consent is not None:
                    adding = "applicant_ref" in entry.consent
                    statement = sql.add_consent if adding else sql.revoke_consent
                    consents.append((statement, {**entry.consent, "last_seq": seq}))
                for view in entry.views:
                    if entry.kind == "review":
                        changed_views.append(sql.update_view.params({**view, "last_seq": seq}))
                    else:
                        new_views.append(sql.view.params({**view, "last_seq": seq}))
                prev = digest
                seqs.append(seq)
            # Log rows first: view rows point at them (a foreign key PostgreSQL enforces).
            cur.executemany(sql.log.sql, log_rows)
            if new_views:
                cur.executemany(sql.view.sql, new_views)
            if changed_views:
                cur.executemany(sql.update_view.sql, changed_views)
            for statement, values in consents:
                cur.execute(statement.sql, statement.params(values))
            head = sql.update_head if found else sql.insert_head
            cur.execute(head.sql, head.params({"id": 1, "seq": seq, "hash": prev}))
            raw.commit()
            if self.checkpointer is not None:
                self.checkpointer.after_commit(cur)
        except BaseException as exc:
            raw.rollback()
            if _lock_stayed_taken(exc):
                if not wait:
                    raise Busy("the database is locked by another connection") from exc
                raise LockTimeout(
                    f"the audit database stayed locked for {self.lock_timeout:g} s"
                ) from exc
            raise
        finally:
            raw.close()  # back to the pool
        if self.checkpointer is not None:
            self.checkpointer.poke()
        return seqs

    def _awaits_review(self, cur: Any, decision_id: str, reviewed: set[str]) -> bool:
        if decision_id in reviewed:
            return False
        cur.execute(self._sql.status.sql, self._sql.status.params({"decision_id": decision_id}))
        found = cur.fetchone()
        return found is not None and found[0] == "under_review"

    def _consent_applies(self, cur: Any, change: dict[str, Any], seen: set[str]) -> bool:
        """An add needs a new id; a revoke a consent that is not revoked (`seen`: changed
        earlier in this transaction)."""
        if f"{change['institution']}\0{change['consent_id']}" in seen:
            return False
        cur.execute(self._sql.consent.sql, self._sql.consent.params(change))
        found = cur.fetchone()
        if "applicant_ref" in change:
            return found is None
        return found is not None and found[0] is None

    def close(self) -> None:
        """Stop the checkpoint thread, release the lock file, close connections."""
        if self.checkpointer is not None:
            self.checkpointer.stop()
        if self.file_lock is not None:
            self.file_lock.close()
        self._writes.dispose()
        self._writes_now.dispose()
        self.engine.dispose()

    def get(self, decision_id: str) -> DecisionRow | None:
        with Session(self.engine) as s:
            return s.get(DecisionRow, decision_id)

    def entry(self, kind: str, decision_id: str) -> tuple[int, str, str] | None:
        """(seq, institution, payload text) of the first chained row of this kind about this
        id (a batch: its own id)."""
        with Session(self.engine) as s:
            row = s.scalars(
                select(AuditRow).where(AuditRow.decision_id == decision_id, AuditRow.kind == kind)
            ).first()
            return None if row is None else (row.seq, row.institution, row.payload)

    def row_hash(self, seq: int) -> str | None:
        """The chained hash of row `seq`, None if the log has no such row."""
        with Session(self.engine) as s:
            return s.scalars(select(AuditRow.hash).where(AuditRow.seq == seq)).first()

    def list_status(self, institution: str, status: str, limit: int) -> list[DecisionRow]:
        with Session(self.engine) as s:
            rows = s.scalars(
                select(DecisionRow)
                .where(DecisionRow.institution == institution, DecisionRow.status == status)
                .order_by(DecisionRow.created_at)
                .limit(limit)
            )
            return list(rows)

    def rows(self) -> Iterator[Link]:
        with Session(self.engine) as s:
            for r in s.scalars(select(AuditRow).order_by(AuditRow.seq)).yield_per(1000):
                yield Link(r.seq, r.kind, r.decision_id, r.institution, r.created_at, r.payload,
                           r.prev_hash, r.hash)  # fmt: skip

    def verify(self, derive: Derive) -> tuple[int, str]:
        """Walk the chain, check its head and the `decisions` view against what the chain
        implies (`derive`: see service/chain.py); raise AuditError naming the first problem.
        Returns the head."""
        last_seq, last_hash, expected = walk(self.rows(), derive)
        head_seq, head_hash = self.head()
        if (head_seq, head_hash) != (last_seq, last_hash):
            raise AuditError(
                f"chain head says row {head_seq}, the log ends at row {last_seq}: "
                "rows were deleted or appended outside the service"
            )
        with Session(self.engine) as s:
            views = {v.decision_id: v for v in s.scalars(select(DecisionRow))}
        for decision_id in sorted(set(views) | set(expected)):
            view, want = views.get(decision_id), expected.get(decision_id)
            if view is None or want is None:
                raise AuditError(f"decision {decision_id}: in only one of log and decisions table")
            got = {
                "status": view.status,
                "decision": view.decision,
                "final_decision": view.final_decision,
                # Empty: the response is kept by the entry that made the decision.
                "response": json.loads(view.response) if view.response else view.response,
                "last_seq": view.last_seq,
            }
            if got != want:
                changed = sorted(k for k in want if got[k] != want[k])
                raise AuditError(
                    f"decision {decision_id}: decisions table differs from the log ({changed})"
                )
        return head_seq, head_hash


def _lock_stayed_taken(exc: BaseException) -> bool:
    """SQLite's busy timeout or PostgreSQL's lock_timeout (SQLSTATE 55P03) ran out."""
    return sqlite.is_locked(exc) or getattr(exc, "sqlstate", None) == "55P03"
