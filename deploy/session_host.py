"""The node's vertical session host (`client.vertical_host`), started beside its ClientApp
worker and stopped with it.

The host's unix socket and its session registry (`client.vertical_registry`) live in a fixed
private directory of the node, `<state-dir>/vertical-host/` (0700; refused when it is a
symlink, another user's or open to others), so a worker started after the whole worker was
killed (`kill -9`, OOM) finds the registry of the runs lost with it and its host refuses them
by name, as after a crash of the host alone. A worker without a state directory (run by hand)
uses a fresh temporary directory, removed when it stops. The worker puts the socket's path in
its environment, so each task it forks finds it (`federation.session_socket.SOCKET_ENV`).
Nothing of the host listens on a network port. The worker checks the host between task polls
and starts another on the same socket when it has died (crash, OOM kill, `kill -9`): its
sessions, which hold secrets and are never written to disk, are lost, and the new host
refuses their runs' messages naming them.

One host per directory: each host holds the directory's lock (`LOCK_NAME`, `flock`) from
before its socket is replaced until it exits, so a host orphaned by a killed worker has
written its registry before the next one reads it, and a second node started with the same
kit is refused instead of taking over the first one's socket.
"""

from __future__ import annotations

import contextlib
import fcntl
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
from jointcredit.trust.files import private_directory

HOST_MODULE = "jointcredit.client.vertical_host"
READY_SECONDS = 60.0  # the host imports the vertical stack before it binds
STOP_GRACE = 10.0
RESTART_EVERY = 5.0  # seconds between attempts to restart a host that keeps failing
HOST_DIR = "vertical-host"  # the host's directory under the node's state directory
LOCK_NAME = "host.lock"
# Seconds a new host waits for the directory's lock: a host orphaned by a killed worker sees
# its parent gone within a second (`client.vertical_host.WATCH_EVERY`), then stops.
LOCK_WAIT = 30.0


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

    def _lock(self) -> int:
        """The directory's lock, held (an open descriptor), waiting up to `LOCK_WAIT` for a
        host that still has it (one orphaned by a killed worker is about to exit)."""
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.directory / LOCK_NAME, flags, 0o600)
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise RuntimeError(
                        f"{self.directory}: another vertical session host has held it for "
                        f"{LOCK_WAIT:g} s (is a second node running with this kit?)"
                    ) from None
                time.sleep(0.1)

    def start(self, restarted: str | None = None) -> None:
        """Start the host and wait until it listens; `restarted`: why its predecessor
        stopped (the new host then refuses the sessions it held, naming them)."""
        lock = self._lock()
        try:
            self.path.unlink(missing_ok=True)  # a killed host leaves its socket file behind
            cmd = [sys.executable, "-m", HOST_MODULE, "--socket", str(self.path)]
            cmd += ["--parent", str(os.getpid())]
            if restarted is not None:
                cmd += ["--restarted", restarted]
            # The host inherits the lock and holds it until it exits; the worker lets go of
            # it, so the tasks it forks never hold it.
            self.proc = proc = subprocess.Popen(cmd, pass_fds=(lock,))
        finally:
            os.close(lock)
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
def session_host(state_dir: Path | None = None) -> Iterator[SessionHost]:
    """Run the session host while the block runs (its socket path also in `SOCKET_ENV`),
    in `state_dir/HOST_DIR` (kept, with the registry, for the node's next worker) or, without
    a state directory, in a temporary one removed afterwards; the caller keeps it running
    with `SessionHost.check`. Raises `UnsafeFile` (an OSError) for a directory it must
    not use, RuntimeError when the host does not start."""
    if state_dir is None:
        directory = Path(tempfile.mkdtemp(prefix="jointcredit-vertical-"))  # 0700
    else:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory = private_directory(state_dir / HOST_DIR)
    host: SessionHost | None = None
    try:
        host = SessionHost(directory)
        host.start()
        os.environ[SOCKET_ENV] = str(host.path)
        yield host
    finally:
        os.environ.pop(SOCKET_ENV, None)
        if host is not None:
            host.stop()  # the host removes its socket file as it exits
        if state_dir is None:
            shutil.rmtree(directory, ignore_errors=True)
