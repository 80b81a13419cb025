"""The node's vertical session host (`client.vertical_host`), started beside its ClientApp
worker and stopped with it.

The worker makes a private directory (0700, in the system's temp directory) for the channel's
unix socket, starts the host on it, and puts the socket's path in its environment, so each
task it forks finds it (`federation.session_socket.SOCKET_ENV`). Nothing of the host listens on
a network port; the directory is removed when the worker stops. The worker checks the host
between task polls and starts another on the same socket when it has died (crash, OOM kill,
`kill -9`): its sessions, which hold secrets and are never written to disk, are lost, and the
new host refuses their runs' messages naming them (`client.vertical_registry`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from jointcredit.federation.session_socket import SOCKET_ENV, SOCKET_NAME

HOST_MODULE = "jointcredit.client.vertical_host"
READY_SECONDS = 60.0  # the host imports the vertical stack before it binds
STOP_GRACE = 10.0
RESTART_EVERY = 5.0  # seconds between attempts to restart a host that keeps failing


def _why(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class SessionHost:
    """The node's session host process, restarted by `check` when it has died."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / SOCKET_NAME
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._next_try = 0.0

    def start(self, restarted: str | None = None) -> None:
        """Start the host and wait until it listens; `restarted`: why its predecessor
        stopped (the new host then refuses the sessions it held, naming them)."""
        self.path.unlink(missing_ok=True)  # a killed host leaves its socket file behind
        cmd = [sys.executable, "-m", HOST_MODULE, "--socket", str(self.path)]
        cmd += ["--parent", str(os.getpid())]
        if restarted is not None:
            cmd += ["--restarted", restarted]
        self.proc = proc = subprocess.Popen(cmd)
        deadline = time.monotonic() + READY_SECONDS
        while not self.path.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"the vertical session host exited ({_why(proc.returncode)})")
            if time.monotonic() > deadline:
                self._end(proc)
                raise RuntimeError("the vertical session host did not start")
            time.sleep(0.05)

    def check(self) -> bool:
        """Whether the host runs; when it has died, start another (at most one attempt per
        `RESTART_EVERY` seconds). Called by the worker between task polls, so the next task
        after a crash finds a host that names the sessions lost with the old one."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            return True
        now = time.monotonic()
        if now < self._next_try:
            return False
        self._next_try = now + RESTART_EVERY
        why = "it did not start" if proc is None else _why(proc.returncode)
        print(f"vertical session host stopped ({why}); restarting it", flush=True)
        try:
            self.start(restarted=why)
        except (OSError, RuntimeError) as exc:
            print(f"vertical session host not restarted: {exc}", flush=True)
            return False
        self.restarts += 1
        return True

    @staticmethod
    def _end(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            self._end(self.proc)


@contextlib.contextmanager
def session_host() -> Iterator[SessionHost]:
    """Run the session host while the block runs (its socket path also in `SOCKET_ENV`);
    the caller keeps it running with `SessionHost.check`."""
    directory = Path(tempfile.mkdtemp(prefix="jointcredit-vertical-"))  # 0700
    host = SessionHost(directory)
    try:
        host.start()
        os.environ[SOCKET_ENV] = str(host.path)
        yield host
    finally:
        os.environ.pop(SOCKET_ENV, None)
        host.stop()
        shutil.rmtree(directory, ignore_errors=True)
