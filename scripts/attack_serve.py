"""`jointcredit serve` as a process of its own on 127.0.0.1, for `scripts/attack.py`: started
in its own session (so SIGKILL reaches every worker at once), waited for, stopped or killed."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

HOST = "127.0.0.1"  # loopback only: nothing here listens on or connects to anything else

# Every server started and not yet ended: each runs in its own session, so a harness ended by a
# signal or an error must end them itself (`kill_all`).
_LIVE: set[Server] = set()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def client(base: str, timeout: float = 30) -> httpx.Client:
    """An HTTP client of `base` that ignores proxy settings (loopback stays loopback)."""
    return httpx.Client(base_url=base, timeout=timeout, trust_env=False)


@dataclass(frozen=True)
class Model:
    """A run's signed model and trust store, and what every service of the attack shares."""

    model: Path
    trust: Path
    api_keys: Path


@dataclass(eq=False)
class Server:
    """One `jointcredit serve` process (with `workers` worker processes) on `db`."""

    model: Model
    db: Path
    log: Path
    workers: int = 1
    anchor_every: int = 50
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def anchors(self) -> Path:
        return self.db.with_name("anchors.jsonl")

    @property
    def anchor_key(self) -> Path:
        return self.db.with_name("anchor.key")

    def start(self) -> Server:
        cmd = [sys.executable, "-m", "jointcredit.cli", "serve", "--model", str(self.model.model),
               "--trust", str(self.model.trust), "--api-keys", str(self.model.api_keys),
               "--db", f"sqlite:///{self.db}", "--host", HOST, "--port", str(self.port),
               "--workers", str(self.workers), "--anchors", str(self.anchors),
               "--anchor-key", str(self.anchor_key),
               "--anchor-every", str(self.anchor_every)]  # fmt: skip
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        _LIVE.add(self)
        return self

    def wait_ready(self, seconds: float = 120) -> None:
        """Until `/readyz` answers 200 (with several workers: every worker has started)."""
        assert self.proc is not None
        deadline = time.monotonic() + seconds
        ready = 0
        while ready < 3 * self.workers:  # consecutive answers: more than one worker is up
            try:
                ok = httpx.get(f"{self.base}/readyz", timeout=2, trust_env=False).status_code
                ready = ready + 1 if ok == 200 else 0
            except httpx.TransportError:
                ready = 0
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"serve exited {self.proc.returncode}: {tail}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"serve not ready within {seconds:.0f} s")
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL to the whole session: the server and every worker, at once."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        _reap_session(self.proc)
        _LIVE.discard(self)

    def stop(self) -> None:
        """SIGTERM (a clean shutdown: the service anchors its head), SIGKILL after 30 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
        _LIVE.discard(self)


def kill_all() -> None:
    """SIGKILL every server still running."""
    for server in list(_LIVE):
        server.kill()


def _reap_session(proc: subprocess.Popen[bytes] | None) -> None:
    """Workers that outlived their parent are still in its session: kill them too."""
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
