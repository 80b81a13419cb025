"""The watchdog of one simulation run (`simulations/guard.py`): `python -m
jointcredit.simulations.watchdog PID KEYS_DIR`.

It reads its stdin, a pipe from the run. The run writes `done` when it ends on its own; end of
file without it means the run died (SIGKILL, the OOM killer). Then the watchdog removes the
run's key directory and stops every process the run had started (its descendants, snapshot
every half second, each identified by pid and start time so a recycled pid is never hit).
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import sys
from pathlib import Path

import psutil

from jointcredit.simulations.guard import DONE

SNAPSHOT_SECONDS = 0.5
GRACE_SECONDS = 3.0


def _descendants(pid: int) -> dict[int, float]:
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return {}
    out: dict[int, float] = {}
    for child in children:
        with contextlib.suppress(psutil.Error):
            out[child.pid] = child.create_time()
    return out


def _stop(snapshot: dict[int, float]) -> None:
    alive: list[psutil.Process] = []
    for pid, started in snapshot.items():
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            if proc.create_time() == started:
                proc.terminate()
                alive.append(proc)
    _, left = psutil.wait_procs(alive, timeout=GRACE_SECONDS)
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()


def watch(pid: int, keys: Path | None) -> None:
    stdin = sys.stdin.fileno()
    received = b""
    snapshot: dict[int, float] = {}
    while True:
        ready, _, _ = select.select([stdin], [], [], SNAPSHOT_SECONDS)
        if ready:
            chunk = os.read(stdin, 64)
            if chunk:
                received += chunk
                continue
            break  # end of file: the run ended, on its own or not
        current = _descendants(pid)
        current.pop(psutil.Process().pid, None)
        snapshot.update(current)
    if received == DONE:
        return
    if keys is not None:
        shutil.rmtree(keys, ignore_errors=True)
    _stop(snapshot)


def main() -> None:
    pid, keys = int(sys.argv[1]), sys.argv[2]
    watch(pid, Path(keys) if keys else None)


if __name__ == "__main__":
    main()
