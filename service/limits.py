"""Limits on expensive reads, so that one client cannot degrade the others.

Reading back a decision made in a columnar batch that is not in the record cache parses the
batch's whole chained record (megabytes of JSON for 10,000 applicants) in a worker thread.
The parser holds the interpreter's lock while it runs, so such reads slow every other request
down however they are scheduled: each API key may run one at a time, and `rate` per second on
average (bursts of `burst`); beyond that the request gets 429 with Retry-After. At most
`at_once` run at the same time across all keys.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass


class TooManyReads(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many expensive reads: retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass
class _Bucket:
    tokens: float
    at: float
    running: int = 0


class Gate:
    """At most `at_once` holders at a time across a service: an asyncio semaphore for
    whichever event loop is running (a service runs one; tests run several in turn, and a
    semaphore that has waited on one loop refuses to wait on another)."""

    def __init__(self, at_once: int) -> None:
        self.at_once = at_once
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __call__(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._loop is not loop:
            self._slots, self._loop = asyncio.Semaphore(self.at_once), loop
        return self._slots


class ReadLimits:
    def __init__(self, rate: float = 2.0, burst: int = 4, at_once: int = 2) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, _Bucket] = {}  # by API key id: a bounded, known set
        self._gate = Gate(at_once)

    @asynccontextmanager
    async def expensive(self, key_id: str) -> AsyncIterator[None]:
        """Admit one expensive read for this key, or raise TooManyReads."""
        now = time.monotonic()
        bucket = self._buckets.setdefault(key_id, _Bucket(float(self.burst), now))
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.running:
            raise TooManyReads(1)
        if bucket.tokens < 1:
            raise TooManyReads(max(1, math.ceil((1 - bucket.tokens) / self.rate)))
        bucket.tokens -= 1
        bucket.running += 1
        try:
            async with self._gate():
                yield
        finally:
            bucket.running -= 1
