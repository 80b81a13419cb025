"""The decision log: every decision and every review, hash-chained (SQLAlchemy; SQLite file by
default, PostgreSQL by URL).

`audit_log` is append-only: each row stores a canonical JSON payload, the previous row's hash
and its own hash = SHA-256(previous hash + payload). Editing any stored field, deleting or
reordering rows breaks the chain; `chain_head` (the last sequence number and hash, updated in
the same transaction) also catches truncation of the newest rows. `jointcredit audit verify`
walks it. A hash chain proves nothing against someone who rewrites the whole chain
consistently: export the head hash (`/readyz`, `audit verify`) to somewhere they cannot write.

`decisions` is the current view (status after reviews) that the API reads; it is derived data,
and `audit verify` checks it against the chain too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import threading

try:
    import fcntl
except ImportError:  # not POSIX: SQLite's own locking orders writers
    fcntl = None  # type: ignore[assignment]
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson
from sqlalchemy import (
    Engine,
    ForeignKey,
    Integer,
    String,
    Text,
    bindparam,
    create_engine,
    event,
    insert,
    inspect,
    literal_column,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from jointcredit.service.columns import locate, row_response

GENESIS = "0" * 64


class Base(DeclarativeBase):
    pass


class AuditRow(Base):
    __tablename__ = "audit_log"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(16))
    decision_id: Mapped[str] = mapped_column(String(64), index=True)
    institution: Mapped[str] = mapped_column(String(128), index=True)
    created_at: Mapped[str] = mapped_column(String(40))
    payload: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class ChainHead(Base):
    __tablename__ = "chain_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


class DecisionRow(Base):
    __tablename__ = "decisions"
    decision_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    institution: Mapped[str] = mapped_column(String(128), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    decision: Mapped[str] = mapped_column(String(16))
    final_decision: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_at: Mapped[str] = mapped_column(String(40))
    updated_at: Mapped[str] = mapped_column(String(40))
    response: Mapped[str] = mapped_column(Text)
    last_seq: Mapped[int] = mapped_column(ForeignKey("audit_log.seq"))


# A `decisions` row's response when it is kept in its columnar batch's chained record (the
# decision id names the record and row, service/columns.py): writing ~1.2 kB of response per
# referred applicant again doubled what a columnar batch wrote.
IN_BATCH = ""

# A `decisions` row as plain column values. Appends take these rather than ORM objects:
# constructing a mapped instance was the largest single cost in a profile of the service.
View = dict[str, Any]


def as_view(row: DecisionRow) -> View:
    return {c.name: getattr(row, c.name) for c in DecisionRow.__table__.columns}


def canonical(obj: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 text (orjson: a decision's payload is ~3 KB and the
    stdlib encoder spent ~60 us on each). The chain hashes the stored text, so verifying never
    re-encodes and an encoder change cannot break old rows."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY).decode()


def chain_hash(prev: str, seq: int, kind: str, decision_id: str, institution: str,
               created_at: str, payload: str) -> str:  # fmt: skip
    h = hashlib.sha256()
    for part in (prev, str(seq), kind, decision_id, institution, created_at, payload):
        data = part.encode()
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Entry:
    """One chain row. A `decision` covers one decision, a `batch` every decision of one batch
    request (payload `decisions`: one record per decision, in request order, or with
    `format = "columns"` one list per output field (service/columns.py); one canonical
    encoding and one hash instead of thousands), a `review` one reviewer's resolution."""

    kind: str  # "decision" | "batch" | "review"
    decision_id: str  # a batch: the batch's own id
    institution: str
    payload: dict[str, Any]
    views: tuple[View, ...] = ()  # decision/batch: `decisions` rows to add; review: to update


class AuditError(RuntimeError):
    pass


class Busy(RuntimeError):
    """`append(wait=False)` found another writer holding the lock; nothing was written."""


class AuditLog:
    def __init__(self, url: str, *, create: bool = True, wal_limit: int = 256 << 20) -> None:
        self.url = url
        if not create and url.startswith("sqlite:///"):
            path = url.removeprefix("sqlite:///")
            if not Path(path).is_file():
                raise AuditError(f"no audit log at {url}")
        self.engine: Engine = create_engine(url, future=True)
        self._sqlite = self.engine.dialect.name == "sqlite"
        database = self.engine.url.database
        self._path = database if self._sqlite and database not in (None, "", ":memory:") else None
        # Appends read the chain head and write after it: they must hold the database's write
        # lock from the start, or two service processes on one database read the same head.
        self._writes: Engine = self.engine
        if url.startswith("sqlite"):
            # WAL + NORMAL: readers do not block the writer, one fsync per checkpoint instead
            # of per commit; a power cut can lose the last commits but never corrupts the file.
            @event.listens_for(self.engine, "connect")
            def _pragmas(conn: Any, _: Any) -> None:
                cur = conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.close()

            # SQLite has no SELECT ... FOR UPDATE: writes go through an engine whose
            # transactions start with BEGIN IMMEDIATE (SQLAlchemy's documented pysqlite
            # recipe: the driver's own implicit BEGIN is switched off).
            self._writes = create_engine(url, future=True)

            # Checkpoints (copying the WAL into the database file, with an fsync) run in a
            # background thread, not inside whichever commit crosses the WAL's size limit:
            # that commit paid the copy and the fsync, and so did every request waiting on it.
            @event.listens_for(self._writes, "connect")
            def _immediate(conn: Any, _: Any) -> None:
                _pragmas(conn, _)
                conn.execute("PRAGMA wal_autocheckpoint=0")
                conn.isolation_level = None

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
        self._batches: dict[int, dict[str, Any]] = {}  # parsed columnar batch records by seq
        # One writer at a time within this process (the database lock orders processes).
        self._lock = threading.Lock()
        self._sql = _Statements(self._writes.dialect)
        self._lock_file: IO[bytes] | None = None
        self._checkpointer: _Checkpointer | None = None
        if self._sqlite and self._path is not None:
            if fcntl is not None:
                self._lock_file = open(f"{self._path}.lock", "ab")  # noqa: SIM115 (held open)
            self._checkpointer = _Checkpointer(
                self.engine, Path(f"{self._path}-wal"), wal_limit=wal_limit
            )

    @property
    def local(self) -> bool:
        """Appends touch only a local file (SQLite): see AuditWriter."""
        return self._sqlite

    def head(self) -> tuple[int, str]:
        with Session(self.engine) as s:
            head = s.get(ChainHead, 1)
            return (head.seq, head.hash) if head else (0, GENESIS)

    def append(self, entries: list[Entry], *, wait: bool = True) -> list[int]:
        """Append entries (and their current-view rows) in one transaction; returns seqs.

        Statements compiled once by SQLAlchemy for this database's dialect and run through the
        driver's cursor: through SQLAlchemy's execution path an append cost ~0.5 ms of CPU per
        transaction plus ~100 us per row (190 vs 70 us per decision in groups of 16, measured),
        more than SQLite's own work, on the service's hot path."""
        if not self._lock.acquire(blocking=wait):
            raise Busy("another append of this process is running")
        try:
            with self._file_lock(wait):
                return self._append(entries)
        finally:
            self._lock.release()

    def _append(self, entries: list[Entry]) -> list[int]:
        sql = self._sql
        raw = self._writes.raw_connection()
        try:
            cur = raw.cursor()
            if self._sqlite:
                cur.execute("BEGIN IMMEDIATE")
            # Read the head inside the write transaction (another process may have written).
            cur.execute(sql.head.sql)
            found = cur.fetchone()
            seq, prev = (int(found[0]), str(found[1])) if found else (0, GENESIS)
            log_rows: list[Any] = []
            new_views: list[Any] = []
            changed_views: list[Any] = []
            seqs = []
            for entry in entries:
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
            head = sql.update_head if found else sql.insert_head
            cur.execute(head.sql, head.params({"id": 1, "seq": seq, "hash": prev}))
            raw.commit()
            if self._checkpointer is not None:
                self._checkpointer.after_commit(cur)
        except BaseException:
            raw.rollback()
            raise
        finally:
            raw.close()  # back to the pool
        if self._checkpointer is not None:
            self._checkpointer.poke()
        return seqs

    @contextlib.contextmanager
    def _file_lock(self, wait: bool = True) -> Iterator[None]:
        """SQLite: processes queue for the write lock in the kernel. Without it a process
        that finds the database locked polls in SQLite's busy handler, sleeping up to 100 ms
        between tries, while each transaction holds the lock ~1-2 ms (two service workers had
        a p99 of 140 ms)."""
        if self._lock_file is None:
            yield
            return
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError as exc:
            raise Busy("another process is appending") from exc
        try:
            yield
        finally:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
        self._writes.dispose()
        self.engine.dispose()

    def get(self, decision_id: str) -> DecisionRow | None:
        with Session(self.engine) as s:
            return s.get(DecisionRow, decision_id)

    def batch_decision(self, decision_id: str) -> tuple[str, dict[str, Any]] | None:
        """(institution, response) of a decision made in a columnar batch, from its chained
        batch record; None when the id is not one."""
        where = locate(decision_id)
        if where is None:
            return None
        batch, k = where
        with Session(self.engine) as s:
            row = s.scalars(
                select(AuditRow).where(AuditRow.decision_id == batch, AuditRow.kind == "batch")
            ).first()
            if row is None:
                return None
            institution, seq, text = row.institution, row.seq, row.payload
        payload = self._batches.get(seq)
        if payload is None:
            payload = json.loads(text)
            self._batches[seq] = payload
            while len(self._batches) > 8:  # the last 8 batches parsed, ~MBs each
                self._batches.pop(next(iter(self._batches)))
        if payload.get("format") != "columns" or k >= len(payload["decisions"]["decision_id"]):
            return None
        return institution, row_response(payload, k)

    def response(self, row: DecisionRow) -> dict[str, Any]:
        """A `decisions` row's response, from the row or from its batch's chained record."""
        if row.response != IN_BATCH:
            return dict(json.loads(row.response))
        found = self.batch_decision(row.decision_id)
        if found is None:
            raise AuditError(f"decision {row.decision_id}: its batch record is missing")
        return found[1]

    def list_status(self, institution: str, status: str, limit: int) -> list[DecisionRow]:
        with Session(self.engine) as s:
            rows = s.scalars(
                select(DecisionRow)
                .where(DecisionRow.institution == institution, DecisionRow.status == status)
                .order_by(DecisionRow.created_at)
                .limit(limit)
            )
            return list(rows)

    def rows(self) -> Iterator[AuditRow]:
        with Session(self.engine) as s:
            yield from s.scalars(select(AuditRow).order_by(AuditRow.seq)).yield_per(1000)

    def verify(self) -> tuple[int, str]:
        """Walk the chain; raise AuditError naming the first broken row. Returns the head."""
        prev, expected_seq = GENESIS, 1
        expected_views: dict[str, dict[str, Any]] = {}
        for row in self.rows():
            if row.seq != expected_seq:
                raise AuditError(f"row {expected_seq} is missing (next row is {row.seq})")
            if row.prev_hash != prev:
                raise AuditError(f"row {row.seq}: previous-hash link broken")
            digest = chain_hash(
                prev, row.seq, row.kind, row.decision_id, row.institution, row.created_at,
                row.payload,
            )  # fmt: skip
            if digest != row.hash:
                raise AuditError(f"row {row.seq} ({row.kind} {row.decision_id}): edited")
            prev, expected_seq = row.hash, expected_seq + 1
            payload = json.loads(row.payload)
            if row.kind == "batch" and payload.get("format") == "columns":
                cols = payload["decisions"]
                for k, decision_id in enumerate(cols["decision_id"]):
                    if cols["decision"][k] != "refer":
                        continue  # final: no view row, read from this record
                    response = {"status": cols["status"][k], "decision": "refer"}
                    replayed = replay(None, "decision", {"response": response}, row.seq)
                    expected_views[decision_id] = {**replayed, "response": IN_BATCH}
            elif row.kind == "batch":
                for record in payload["decisions"]:
                    decision_id = record["response"]["decision_id"]
                    expected_views[decision_id] = replay(None, "decision", record, row.seq)
            else:
                expected_views[row.decision_id] = replay(
                    expected_views.get(row.decision_id), row.kind, payload, row.seq
                )
        head_seq, head_hash = self.head()
        if (head_seq, head_hash) != (expected_seq - 1, prev):
            raise AuditError(
                f"chain head says row {head_seq}, the log ends at row {expected_seq - 1}: "
                "rows were deleted or appended outside the service"
            )
        with Session(self.engine) as s:
            views = {v.decision_id: v for v in s.scalars(select(DecisionRow))}
        for decision_id in sorted(set(views) | set(expected_views)):
            view, want = views.get(decision_id), expected_views.get(decision_id)
            if view is None or want is None:
                raise AuditError(f"decision {decision_id}: in only one of log and decisions table")
            got = {
                "status": view.status,
                "decision": view.decision,
                "final_decision": view.final_decision,
                "response": IN_BATCH if view.response == IN_BATCH else json.loads(view.response),
                "last_seq": view.last_seq,
            }
            if got != want:
                changed = sorted(k for k in want if got[k] != want[k])
                raise AuditError(
                    f"decision {decision_id}: decisions table differs from the log ({changed})"
                )
        return head_seq, head_hash


@dataclass(frozen=True)
class _Compiled:
    """A statement compiled for one dialect: its SQL text and how to order its parameters."""

    sql: str
    positions: tuple[str, ...] | None  # positional paramstyles (qmark, format); None: named
    renames: tuple[tuple[str, str], ...] = ()  # (parameter, the column value it takes)

    @classmethod
    def of(cls, statement: Any, dialect: Any, **renames: str) -> _Compiled:
        compiled = statement.compile(dialect=dialect)
        positions = tuple(compiled.positiontup) if compiled.positional else None
        return cls(str(compiled), positions, tuple(renames.items()))

    def params(self, values: dict[str, Any]) -> Any:
        if self.renames:
            values = {**values, **{new: values[old] for new, old in self.renames}}
        if self.positions is None:
            return values
        return tuple(values[name] for name in self.positions)


class _Statements:
    def __init__(self, dialect: Any) -> None:
        view_columns = [c.name for c in DecisionRow.__table__.columns if c.name != "decision_id"]
        head = select(ChainHead.seq, ChainHead.hash).where(ChainHead.id == literal_column("1"))
        self.head = _Compiled(str(head.with_for_update().compile(dialect=dialect)), None)
        self.log = _Compiled.of(insert(AuditRow), dialect)
        self.view = _Compiled.of(insert(DecisionRow), dialect)
        self.insert_head = _Compiled.of(insert(ChainHead), dialect)
        # Renamed parameters: SQLAlchemy reserves a column's own name in a SET clause.
        self.update_view = _Compiled.of(
            update(DecisionRow)
            .where(DecisionRow.decision_id == bindparam("decision_id_"))
            .values({c: bindparam(c) for c in view_columns}),
            dialect,
            decision_id_="decision_id",
        )
        self.update_head = _Compiled.of(
            update(ChainHead)
            .where(ChainHead.id == bindparam("id_"))
            .values(seq=bindparam("seq_"), hash=bindparam("hash_")),
            dialect,
            id_="id",
            seq_="seq",
            hash_="hash",
        )


class _Checkpointer:
    """Copies the SQLite WAL into the database file off the request path, at most every
    `interval` seconds and only after commits.

    PASSIVE never blocks readers or writers, but the WAL only starts again from its beginning
    when a writer finds everything copied, which under steady load never happens (a commit
    always lands between a checkpoint's end and the next write): it grew to 2.5 GB over one
    service benchmark run (about a minute of load per server). So when a passive checkpoint
    finds more than `wal_limit` bytes of log, the next append, which holds the write locks
    anyway, finishes the copy as a RESTART checkpoint (the passive ones have done most of it;
    6 and 82 ms in two restarts measured under load) and the log starts again from the file's
    beginning, reusing it. TRUNCATE would shrink the file too but cost 366-387 ms per 256 MB
    here; it is kept for when the file passes 4x the limit anyway (this thread lagging behind
    a burst). Taking the write locks from this
    thread instead lost to a busy appender for seconds."""

    def __init__(
        self, engine: Engine, wal: Path, interval: float = 0.5, wal_limit: int = 256 << 20
    ) -> None:
        self.engine, self.wal, self.interval, self.wal_limit = engine, wal, interval, wal_limit
        self.restart_due = False
        self.restarts = 0  # RESTART or TRUNCATE checkpoints that completed
        self._dirty = False
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-checkpoint", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        self._dirty = True

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        page = 0
        while not self._stopped.wait(self.interval):
            if not self._dirty:
                continue
            self._dirty = False
            try:
                with self.engine.connect() as conn:
                    page = page or int(conn.exec_driver_sql("PRAGMA page_size").scalar_one())
                    # (busy, frames in the log, frames copied)
                    _, frames, _ = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
            except Exception:  # e.g. database locked: nothing lost, try again next time
                self._dirty = True
                continue
            if frames * page > self.wal_limit:
                self.restart_due = True

    def after_commit(self, cursor: Any) -> None:
        """Called by an appender holding the write locks, after its commit. Waits at most 200
        ms for readers of older snapshots, else the next append tries. Never raises: the
        append has committed."""
        if self.restart_due:
            mode = "RESTART"
        elif self._wal_size() > 4 * self.wal_limit:
            mode = "TRUNCATE"
        else:
            return
        try:
            timeout = cursor.execute("PRAGMA busy_timeout").fetchone()[0]
            cursor.execute("PRAGMA busy_timeout = 200")
            try:
                busy = cursor.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()[0]
            finally:
                cursor.execute(f"PRAGMA busy_timeout = {int(timeout)}")
        except Exception:
            return
        if not busy:
            self.restart_due = False
            self.restarts += 1

    def _wal_size(self) -> int:
        try:
            return self.wal.stat().st_size
        except FileNotFoundError:
            return 0

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)


@dataclass
class _Pending:
    entries: list[Entry]
    done: asyncio.Future[list[int]]


class AuditWriter:
    """Group commit for concurrent requests: each request awaits its entries being durable,
    and whatever arrives while one transaction commits goes into the next, so a loaded service
    pays one commit per group instead of one per decision. Written here because SQLAlchemy
    has no group commit; the chain stays strictly sequential (one writer).

    A failed transaction fails every request of its group (none of them was audited, so none
    may be answered); a request whose caller went away is still written (it was decided)."""

    def __init__(self, log: AuditLog, max_entries: int = 20_000) -> None:
        self.log = log
        self.max_entries = max_entries
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None
        self.groups = 0  # transactions committed (for /metrics and tests)

    async def append(self, entries: list[Entry]) -> list[int]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            # First use on this event loop (tests may run several loops one after another).
            self._loop, self._queue = loop, asyncio.Queue()
            self._task = loop.create_task(self._run(self._queue))
        assert self._queue is not None
        pending = _Pending(entries, loop.create_future())
        self._queue.put_nowait(pending)
        return await asyncio.shield(pending.done)

    async def _run(self, queue: asyncio.Queue[_Pending]) -> None:
        while True:
            group = [await queue.get()]
            size = _rows(group[0])
            while not queue.empty() and size < self.max_entries:
                group.append(queue.get_nowait())
                size += _rows(group[-1])
            entries = [e for p in group for e in p.entries]
            try:
                seqs = await self._append(entries)
            except Exception as exc:  # handed to every waiting request
                for p in group:
                    if not p.done.done():
                        p.done.set_exception(exc)
                continue
            self.groups += 1
            start = 0
            for p in group:
                if not p.done.done():
                    p.done.set_result(seqs[start : start + len(p.entries)])
                start += len(p.entries)

    async def _append(self, entries: list[Entry]) -> list[int]:
        if self.log.local:
            # SQLite: a commit is a few writes to the page cache (checkpoints and their fsync
            # run in the background), shorter than the hand-off to a thread and back, which
            # cost ~200 us of CPU per decision in GIL switches. Entries queue up meanwhile
            # and form the next group. Only when another process holds the lock is the wait
            # moved off the event loop.
            try:
                return self.log.append(entries, wait=False)
            except Busy:
                pass
        return await asyncio.to_thread(self.log.append, entries)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def _rows(pending: _Pending) -> int:
    return sum(max(1, len(e.views)) for e in pending.entries)


def replay(
    state: dict[str, Any] | None, kind: str, payload: dict[str, Any], seq: int
) -> dict[str, Any]:
    """The current-view fields a decision has after this log entry."""
    if kind == "decision":
        response = payload["response"]
        return {
            "status": response["status"],
            "decision": response["decision"],
            "final_decision": None if response["decision"] == "refer" else response["decision"],
            "response": response,
            "last_seq": seq,
        }
    if state is None:
        raise AuditError(f"row {seq}: a review of a decision the log does not have")
    return {
        **state,
        "status": "decided",
        "final_decision": payload["final_decision"],
        "last_seq": seq,
    }
