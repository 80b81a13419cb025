"""Which vertical sessions a deployed node's session host holds, kept beside its socket so a
restarted host can name the sessions its predecessor lost.

A session holds secrets (PSI scalar, Paillier secret key) and is never written to disk; only
its key (run id, node id) is, in `SESSIONS_FILE` in the channel's 0700 directory, replaced
whole on every change. When the host dies (crash, OOM kill, `kill -9`) the node's worker starts
a new one (`deploy.session_host`), which reads the file: every session listed there is lost,
and each later message of those runs is refused naming its run, rather than found missing
without a reason or, worse, met with a fresh session in the middle of a run. A host that stops
otherwise lists what it held as lost; the directory is the node's own (under its state
directory), so the next worker's host, after the whole worker was killed, refuses them too.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final

from jointcredit.trust.files import UnsafeFile, read_regular, replace_file

SESSIONS_FILE: Final = "sessions.json"
MAX_FILE: Final = 1 << 20  # bytes; far above any node's number of runs
MAX_LOST: Final = 10_000  # lost keys remembered (the oldest forgotten first)
Key = tuple[int, int]


def _keys(value: object) -> list[Key]:
    if not isinstance(value, list):
        raise ValueError("not a list")
    keys: list[Key] = []
    for item in value:
        if not isinstance(item, list) or len(item) != 2 or not all(type(x) is int for x in item):
            raise ValueError("an entry that is not [run id, node id]")
        keys.append((item[0], item[1]))
    return keys


class Registry:
    """The host's sessions on disk, and the sessions earlier hosts of this node lost."""

    def __init__(self, directory: Path, restarted: str | None = None) -> None:
        self.path = directory / SESSIONS_FILE
        self.restarted = restarted  # why the previous host stopped (None: first start)
        self._lock = threading.Lock()
        self._live: list[Key] = []
        # Sessions registered while being created, not yet settled by their handler: kept in
        # the file even before they are in the host's session table.
        self._pending: dict[Key, int] = {}
        self._stopping = False
        self.lost: list[Key] = self._read_lost()
        self._lost = frozenset(self.lost)
        self._write()

    def _read_lost(self) -> list[Key]:
        try:
            found = json.loads(read_regular(self.path, MAX_FILE))
            if not isinstance(found, dict):
                raise ValueError("not a JSON object")
            lost = _keys(found.get("lost", [])) + _keys(found.get("live", []))
        except FileNotFoundError:
            return []
        except (UnsafeFile, ValueError) as exc:  # the node's own file: say so, start afresh
            print(f"vertical session host: {self.path} unreadable ({exc}); ignored", flush=True)
            return []
        return list(dict.fromkeys(lost))[-MAX_LOST:]

    def _write(self) -> None:
        data = {"live": [list(k) for k in self._live], "lost": [list(k) for k in self.lost]}
        replace_file(self.path, json.dumps(data).encode(), mode=0o600)

    def register(self, key: Key) -> None:
        """A session is being created: on disk before its hello is answered, so a host killed
        any time after the answer leaves it listed (and its successor refuses its run rather
        than start it afresh mid-run). Refused once the host has begun to stop: a session
        made then would be missing from the lost list `close` writes."""
        with self._lock:
            if self._stopping:
                raise RuntimeError("the node's session host is stopping: it starts no session")
            self._pending[key] = self._pending.get(key, 0) + 1
            if key not in self._live:
                self._live = sorted([*self._live, key])
                self._write()

    def stop(self) -> None:
        """The host begins to stop: no session is registered from now on."""
        with self._lock:
            self._stopping = True

    def sync(self, source: Callable[[], list[Key]], settled: Key | None = None) -> None:
        """Record the sessions the host now holds (written only when they changed); `settled`:
        the key a handler registered, now in the host's table or failed. `source` is read
        under the lock: a list read before it could be older than one another thread has
        written meanwhile, and would drop a live session from the file."""
        with self._lock:
            if settled in self._pending:
                self._pending[settled] -= 1
                if not self._pending[settled]:
                    del self._pending[settled]
            if self._stopping:
                return  # `close` writes the last list
            live = sorted({*source(), *self._pending})
            if live != self._live:
                self._live = live
                self._write()

    def close(self, source: Callable[[], list[Key]]) -> None:
        """The host stops: the sessions it holds (`source`) are lost with it, so a successor
        on this directory (the worker's next host, or the next worker's) refuses their runs by
        name, as after a crash. Its own later messages of them are refused too."""
        with self._lock:
            self._stopping = True
            ended = [*self._live, *sorted({*source(), *self._pending})]
            self.lost = list(dict.fromkeys([*self.lost, *ended]))[-MAX_LOST:]
            self._lost = frozenset(self.lost)
            self._live = []
            self._write()

    def lost_reason(self, run_id: int, node_id: int) -> str | None:
        """Why a message of this session cannot be served, when the session was lost."""
        if (run_id, node_id) not in self._lost:
            return None
        why = f" ({self.restarted})" if self.restarted else ""
        return (
            f"the vertical session of run {run_id} on this node (node {node_id}) was lost: the "
            f"node's session host stopped{why} and was restarted without it; a session's "
            f"secrets are never written to disk, so run {run_id} cannot continue: start a new run"
        )
