"""What the audit log does differently on a SQLite file: connection settings, the
cross-process write lock, and WAL checkpoints off the request path.

- WAL journal with `synchronous=NORMAL`: readers (`audit verify`, the API's reads) never block
  the writer, and there is one fsync per checkpoint instead of one per commit; a power cut can
  lose the last commits but never corrupts the file.
- Appends need the database's write lock from their first read of the chain head. SQLite has no
  `SELECT ... FOR UPDATE`, so writes go through an engine whose transactions start with `BEGIN
  IMMEDIATE` (SQLAlchemy's documented pysqlite recipe: the driver's implicit BEGIN is off).
- Processes queue for that lock on an advisory file lock (`<db>.lock`, `filelock`): without
  it a process that finds the database locked polls in SQLite's busy handler, sleeping between
  tries, which put the waits of two service workers far above a transaction's length.
- Checkpoints (copying the WAL into the database file, with an fsync) run in a background
  thread (`Checkpointer`), not inside whichever commit crosses the WAL's size limit, where that
  commit and every request waiting on it would pay for them.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import filelock
from sqlalchemy import Engine, create_engine, event


def private_database(path: str) -> None:
    """Create the database file owner-only (it holds every applicant's features), or narrow an
    existing one to that. SQLite gives its `-wal` and `-shm` files the database file's mode."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        os.close(fd)
    except FileExistsError:
        pass
    for name in (path, f"{path}-wal", f"{path}-shm"):
        with contextlib.suppress(FileNotFoundError):
            if os.stat(name).st_mode & 0o077:
                os.chmod(name, 0o600)


class Busy(RuntimeError):
    """A non-waiting append found another writer holding the lock; nothing was written."""


class LockTimeout(RuntimeError):
    """The audit log's write lock was not free within the bound (another process holds it, or
    the database is locked); nothing was written."""


def _pragmas(conn: Any, _: Any) -> None:
    cur = conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def configure(engine: Engine) -> None:
    """WAL and `synchronous=NORMAL` on every connection of the reading engine."""
    event.listen(engine, "connect", _pragmas)


def write_engine(url: str, lock_timeout: float) -> Engine:
    """An engine whose transactions the caller opens itself with `BEGIN IMMEDIATE` (waiting at
    most `lock_timeout` seconds for another connection's write lock), and which leaves
    checkpoints to the `Checkpointer`."""
    engine = create_engine(url, future=True, connect_args={"timeout": lock_timeout})

    @event.listens_for(engine, "connect")
    def _immediate(conn: Any, record: Any) -> None:
        _pragmas(conn, record)
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.isolation_level = None

    return engine


def begin(cursor: Any) -> None:
    cursor.execute("BEGIN IMMEDIATE")


def is_locked(exc: BaseException) -> bool:
    """Whether a driver error says the database's write lock stayed taken (SQLite's busy
    timeout ran out)."""
    return "database is locked" in str(exc) or "database table is locked" in str(exc)


class FileLock:
    """The advisory lock that orders the writing processes of one database file: filelock's
    primitive (`flock` on POSIX) on a descriptor held open while the log is open.
    `filelock.FileLock` itself opens the file on every acquire, ~70x the cost of a try here
    (docs/BENCHMARKS.md, "Audit lock"); its descriptor functions have no timeout, so the
    bounded wait is ours."""

    def __init__(self, path: str) -> None:
        self._fd: int | None = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0), 0o600
        )

    @property
    def held_open(self) -> bool:
        return self._fd is not None

    @contextlib.contextmanager
    def hold(self, wait: bool = True, timeout: float | None = None) -> Iterator[None]:
        """Hold the lock; `wait=False`: Busy if taken; `timeout`: LockTimeout after that many
        seconds (None: wait as long as it takes)."""
        if self._fd is None:
            raise RuntimeError("the audit log's lock file is closed")
        self._acquire(self._fd, wait, timeout)
        try:
            yield
        finally:
            filelock.unlock_descriptor(self._fd)

    @staticmethod
    def _acquire(fd: int, wait: bool, timeout: float | None) -> None:
        if filelock.lock_descriptor(fd, blocking=False):
            return
        if not wait:
            raise Busy("another process is appending")
        if timeout is None:
            filelock.lock_descriptor(fd, blocking=True, poll_interval=0.005)
            return
        # Poll, sleeping briefly: a commit holds the lock for milliseconds.
        deadline, pause = time.monotonic() + timeout, 0.0005
        while True:
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            if filelock.lock_descriptor(fd, blocking=False):
                return
            if time.monotonic() >= deadline:
                raise LockTimeout(
                    f"another process has held the audit log's lock for {timeout:g} s"
                )
            pause = min(pause * 2, 0.005)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Checkpointer:
    """Copies the WAL into the database file off the request path, at most every `interval`
    seconds and only after commits.

    PASSIVE checkpoints never block readers or writers, but the WAL only starts again from its
    beginning when a writer finds everything copied, which under steady load never happens (a
    commit always lands between a checkpoint's end and the next write), so the file grows
    without bound. So when a passive checkpoint finds more than `wal_limit` bytes of log, the
    next append, which holds the write locks anyway, finishes the copy as a RESTART checkpoint
    (the passive ones have done most of it) and the log starts again from the file's beginning,
    reusing it. TRUNCATE would also shrink the file but costs far more; it is kept for when the
    file passes 4x the limit anyway (this thread lagging behind a burst). Taking the write locks
    from this thread instead loses to a busy appender."""

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
