"""A simulation's private keys and processes do not outlive it, whatever ends it.

A run's fresh signing keys (the coordinator's signs the final model) live in a directory that
exists only for the run: on a memory file system when there is one (`/dev/shm`), so they never
touch a disk, and removed when the run ends. A normal end, an exception, Ctrl-C (SIGINT) and
SIGTERM remove it in this process; for everything this process cannot handle (SIGKILL, the
OOM killer) a watchdog in its own session (`simulations/watchdog.py`) notices the end through
a pipe, removes the directory and stops the processes the run started (Ray's workers, raylet,
agents), which would otherwise be orphaned. `JOINTCREDIT_SECRETS_DIR` chooses where the
directory is made. `simulate --resumable` keeps its keys in the staging directory instead
(a resume needs the same keys); the watchdog still stops its processes.

On an existing Ray cluster (`simulate --ray-address`) the run starts no Ray process of its own:
the cluster's processes were started by `ray start`, not by the run, so they are never among
what the watchdog stops, and Ray itself ends the run's actors on every node when the run's
driver (this process) goes. The institutions' actors on the cluster's nodes read the key
directory by its path: on one machine they share `/dev/shm`; across machines the directory
must be on a file system every node mounts at the same path (`JOINTCREDIT_SECRETS_DIR`),
memory-backed where possible.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

SECRETS_ENV = "JOINTCREDIT_SECRETS_DIR"
DONE = b"done\n"  # what the run writes to the watchdog when it ended on its own


def secrets_parent() -> Path:
    """Where a run's key directory is made: `$JOINTCREDIT_SECRETS_DIR`, else `/dev/shm` (memory
    only) when usable, else the temporary directory."""
    chosen = os.environ.get(SECRETS_ENV)
    if chosen:
        return Path(chosen)
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return Path(tempfile.gettempdir())


UNWIND_SECONDS = 10.0


class _Stop:
    """SIGTERM/SIGINT: remove the keys at once, then unwind with SystemExit so every `finally`
    runs. Flower's simulation can hang while unwinding from inside its wait for the ServerApp,
    so after UNWIND_SECONDS the process exits regardless, and the watchdog stops what it
    started. A second signal acts as the default."""

    def __init__(self, keys: Path | None) -> None:
        self.keys = keys

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        if self.keys is not None:
            shutil.rmtree(self.keys, ignore_errors=True)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        timer = threading.Timer(UNWIND_SECONDS, os._exit, args=(128 + signum,))
        timer.daemon = True
        timer.start()
        raise SystemExit(128 + signum)


@contextlib.contextmanager
def run_guard(*, with_keys: bool = True) -> Iterator[Path | None]:
    """A watchdog for this run's processes and, with `with_keys`, the run's key directory
    (0700, removed whatever ends the run)."""
    keys = (
        Path(tempfile.mkdtemp(prefix="jointcredit-keys-", dir=secrets_parent()))
        if with_keys
        else None
    )
    watchdog = subprocess.Popen(
        [sys.executable, "-m", "jointcredit.simulations.watchdog", str(os.getpid()),
         str(keys or "")],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # not stopped with this process's group
    )  # fmt: skip
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        stop = _Stop(keys)
        previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield keys
    finally:
        if keys is not None:
            shutil.rmtree(keys, ignore_errors=True)
        for s, handler in previous.items():
            signal.signal(s, handler)
        with contextlib.suppress(OSError):
            assert watchdog.stdin is not None
            watchdog.stdin.write(DONE)
            watchdog.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            watchdog.wait(timeout=5)
