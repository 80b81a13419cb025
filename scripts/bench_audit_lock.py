"""Cost of taking and releasing the audit log's cross-process lock when nobody else holds it
(every group commit of the service takes it once): the service's `FileLock` (filelock's
`lock_descriptor` on a descriptor held open) against `filelock.FileLock` (which opens the lock
file on every acquire).

    python scripts/bench_audit_lock.py [--holds 20000]

Prints microseconds per hold for each, one thread, in a temporary directory.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def _per_hold(hold: Callable[[], None], n: int) -> float:
    for _ in range(min(n, 1000)):  # warm-up
        hold()
    started = time.perf_counter()
    for _ in range(n):
        hold()
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    import filelock

    from jointcredit.service.sqlite import FileLock

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--holds", type=int, default=20000)
    n = parser.parse_args().holds
    with tempfile.TemporaryDirectory() as tmp:
        ours = FileLock(str(Path(tmp) / "ours.lock"))

        def hold_ours() -> None:
            with ours.hold(True, 1.0):
                pass

        theirs = filelock.FileLock(str(Path(tmp) / "theirs.lock"), mode=0o600, thread_local=False)

        def hold_theirs() -> None:
            theirs.acquire(timeout=1.0, poll_interval=0.0005)
            theirs.release()

        print(f"service FileLock (lock_descriptor, fd held open): "
              f"{_per_hold(hold_ours, n):.1f} us per hold")  # fmt: skip
        print(f"filelock.FileLock (opens the file per acquire):   "
              f"{_per_hold(hold_theirs, n):.1f} us per hold")  # fmt: skip
        ours.close()


if __name__ == "__main__":
    main()
