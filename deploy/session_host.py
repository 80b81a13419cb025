"""The node's vertical session host (`client.vertical_host`), started beside its ClientApp
worker and stopped with it.

The worker makes a private directory (0700, in the system's temp directory) for the channel's
unix socket, starts the host on it, and puts the socket's path in its environment, so each
task it forks finds it (`client.vertical_channel.SOCKET_ENV`). Nothing of the host listens on
a network port; the directory is removed when the worker stops.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from jointcredit.client.vertical_channel import SOCKET_ENV, SOCKET_NAME

HOST_MODULE = "jointcredit.client.vertical_host"
READY_SECONDS = 60.0  # the host imports the vertical stack before it binds
STOP_GRACE = 10.0


@contextlib.contextmanager
def session_host() -> Iterator[Path]:
    """Run the session host while the block runs; its socket path (also in `SOCKET_ENV`)."""
    directory = Path(tempfile.mkdtemp(prefix="jointcredit-vertical-"))  # 0700
    path = directory / SOCKET_NAME
    proc = subprocess.Popen(
        [sys.executable, "-m", HOST_MODULE, "--socket", str(path), "--parent", str(os.getpid())]
    )
    try:
        deadline = time.monotonic() + READY_SECONDS
        while not path.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"the vertical session host exited ({proc.returncode})")
            if time.monotonic() > deadline:
                raise RuntimeError("the vertical session host did not start")
            time.sleep(0.05)
        os.environ[SOCKET_ENV] = str(path)
        yield path
    finally:
        os.environ.pop(SOCKET_ENV, None)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(directory, ignore_errors=True)
