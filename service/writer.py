"""Group commit of audit entries for concurrent requests.

Each request awaits its entries being committed, and whatever arrives while one transaction
commits goes into the next, so a loaded service pays one commit per group instead of one per
decision. Written here because SQLAlchemy has no group commit; the chain stays strictly
sequential (one writer).

A failed transaction fails every request of its group (none of them was audited, so none may
be answered); a request whose caller went away is still written (it was decided).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from jointcredit.service.anchors import AnchorWriter
from jointcredit.service.audit import AuditLog, Busy, Entry

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    entries: list[Entry]
    done: asyncio.Future[list[int | None]]


class AuditWriter:
    def __init__(
        self, log: AuditLog, max_entries: int = 20_000, anchors: AnchorWriter | None = None
    ) -> None:
        self.log = log
        self.anchors = anchors
        self.max_entries = max_entries
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None
        self.groups = 0  # transactions committed (for /metrics and tests)

    async def append(self, entries: list[Entry]) -> list[int | None]:
        """The entries' seqs, once committed (None: a review that lost to another, see
        `AuditLog.append`); raises what the group's transaction raised."""
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
            written = [s for s in seqs if s is not None]
            if self.anchors is not None and written:
                try:
                    self.anchors.after_commit(written[-1])
                except OSError as exc:  # the group is committed; the next anchor covers it
                    log.warning("audit anchor not written: %s", exc)
            start = 0
            for p in group:
                if not p.done.done():
                    p.done.set_result(seqs[start : start + len(p.entries)])
                start += len(p.entries)

    async def _append(self, entries: list[Entry]) -> list[int | None]:
        if self.log.local:
            # SQLite: a commit is a few writes to the page cache (checkpoints and their fsync
            # run in the background), shorter than a hand-off to a thread and back, which costs
            # GIL switches. Entries queue up meanwhile and form the next group. Only when
            # another process holds the lock is the wait moved off the event loop.
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
        if self.anchors is not None:
            self.anchors.anchor()  # the head at shutdown


def _rows(pending: _Pending) -> int:
    return sum(max(1, len(e.views)) for e in pending.entries)
