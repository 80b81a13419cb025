"""`jointcredit node start`: one institution's SuperNode and its long-lived ClientApp worker,
started together and supervised.

`flower-supernode --isolation process` talks to the SuperLink (TLS, node authentication, the
node's own node config); `deploy/clientapp_worker.py` runs its ClientApp tasks with the app
imported once. They share a per-start random secret (a 0600 file in a private directory,
removed on exit) so that only this worker can take the node's tasks from its loopback
Runtime API. The supervisor forwards SIGTERM/SIGINT to both and waits for them; a worker
that dies is restarted (the SuperNode keeps its connection); when the SuperNode exits, the
worker is stopped and the SuperNode's exit code is returned.

A node restarted after a crash finds the SuperLink still holding its key's node as online
(until its heartbeats are missed: Flower's patience x interval, 60 s) and its activation
refused; the supervisor starts the SuperNode again for as long as that can last, then gives
up with the SuperNode's error (a key that is not registered is refused the same way).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from jointcredit.deploy import clientapp_worker, supernode
from jointcredit.deploy.processes import flower_bin, node_state_dir, supernode_command

SECRET_NAME = "superexec-auth.secret"
GRACE = 20.0  # seconds both processes get to stop before SIGKILL
RESTART_PAUSE = (1.0, 30.0)  # the worker's restart back-off: first pause, longest pause
FAST_FAILURES = 5  # this many worker deaths within a minute: give up, stop the node
REFUSED = b"Failed to activate SuperNode"  # the SuperNode's message when the SuperLink refuses
ACTIVATION_PAUSE = 5.0  # seconds between activation attempts after a refusal


@dataclass(frozen=True)
class NodeCommands:
    supernode: list[str]
    clientapp: list[str]


def node_commands(
    kit: Path,
    data: Path,
    secret: Path,
    *,
    schema: Path | None = None,
    port: int = 9094,
    superlink: str | None = None,
    max_retries: int | None = None,
    poll_interval: float = supernode.DEFAULT_POLL,
    options: Mapping[str, bool | int] | None = None,
) -> NodeCommands:
    """The two processes of one institution's node (raises ValueError on a bad kit/data)."""
    node = supernode_command(
        kit,
        data,
        schema=schema,
        port=port,
        superlink=superlink,
        max_retries=max_retries,
        superexec_secret=secret,
        poll_interval=poll_interval,
        options=options,
    )
    worker = [
        sys.executable,
        "-m",
        clientapp_worker.__name__,
        "--runtime-api-address",
        f"127.0.0.1:{port}",
        "--superexec-auth-secret-file",
        str(secret),
        "--state-dir",  # the vertical session host's directory, kept across worker restarts
        str(node_state_dir(kit)),
    ]
    if schema is not None:
        worker += ["--data-file", str(data.resolve()), "--schema", str(schema.resolve())]
    return NodeCommands(node, worker)


@contextmanager
def private_secret() -> Iterator[Path]:
    """A fresh random secret in a directory only this user can read, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="jointcredit-node-"))  # mode 0700
    path = folder / SECRET_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_supervisor() -> Callable[[], None] | None:
    """For Popen's preexec_fn: the child gets SIGTERM when the supervisor dies, even by
    SIGKILL, so no Flower process outlives it holding its port or taking tasks (Linux;
    elsewhere None). libc is loaded here, in the parent, so the child only makes the call."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def set_parent_death_signal() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    return set_parent_death_signal


def activation_window() -> float:
    """How long a crashed node's key may still be held online by the SuperLink (s)."""
    from flwr.common.constant import HEARTBEAT_DEFAULT_INTERVAL, HEARTBEAT_PATIENCE

    return float(HEARTBEAT_PATIENCE * HEARTBEAT_DEFAULT_INTERVAL) + 15.0


class Supervisor:
    """A Flower process (`commands.supernode`: the SuperNode, or the SuperLink for
    `deploy/link.py`) and its long-lived app worker (`commands.clientapp`), started together
    and stopped together; a worker that dies is restarted with a back-off."""

    def __init__(
        self, commands: NodeCommands, env: dict[str, str], worker_name: str = "ClientApp worker"
    ) -> None:
        self.commands = commands
        self.env = env
        self.worker_name = worker_name
        self.stop_requested = False
        self.node: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.deaths: list[float] = []
        self.refused = threading.Event()
        self.relay: threading.Thread | None = None

    def _start_node(self) -> subprocess.Popen[bytes]:
        """The SuperNode, its output passed through (and watched for a refused activation)."""
        self.refused.clear()
        node = subprocess.Popen(
            self.commands.supernode,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_supervisor(),
        )
        self.relay = threading.Thread(target=self._relay, args=(node,), daemon=True)
        self.relay.start()
        return node

    def _relay(self, node: subprocess.Popen[bytes]) -> None:
        assert node.stdout is not None
        for line in node.stdout:
            if REFUSED in line:
                self.refused.set()
            # Keep draining even when our own output is gone: a full pipe would stall Flower.
            with contextlib.suppress(OSError, ValueError):
                sys.stdout.buffer.write(line)
                sys.stdout.buffer.flush()

    def _retry_activation(self, code: int, first_start: float) -> bool:
        """After a refused activation, try again while the SuperLink may still hold the node
        online from before a crash."""
        if self.relay is not None:
            self.relay.join(timeout=2)  # its last lines
        if code == 0 or not self.refused.is_set():
            return False
        if time.monotonic() - first_start > activation_window():
            return False
        print(
            f"SuperNode activation refused; trying again in {ACTIVATION_PAUSE:.0f} s "
            "(after a crash the SuperLink holds the node online until its heartbeats lapse)",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(ACTIVATION_PAUSE)
        return not self.stop_requested

    def _request_stop(self, _sig: int, _frame: FrameType | None) -> None:
        self.stop_requested = True

    def _start_worker(self) -> None:
        self.worker = subprocess.Popen(
            self.commands.clientapp,
            env=self.env,
            preexec_fn=_die_with_supervisor(),
        )

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        first_start = time.monotonic()
        self.node = self._start_node()
        self._start_worker()
        restart_at: float | None = None
        try:
            while not self.stop_requested:
                code = self.node.poll()
                if code is not None:
                    if self._retry_activation(code, first_start):
                        self.node = self._start_node()
                        continue
                    return code
                now = time.monotonic()
                if self.worker is not None and self.worker.poll() is not None:
                    self.deaths = [t for t in self.deaths if now - t < 60] + [now]
                    print(
                        f"{self.worker_name} exited ({self.worker.returncode}); restarting",
                        file=sys.stderr,
                        flush=True,
                    )
                    if len(self.deaths) >= FAST_FAILURES:
                        print(f"{self.worker_name} keeps failing: stopping", file=sys.stderr)
                        return 1
                    pause = min(RESTART_PAUSE[0] * 2 ** (len(self.deaths) - 1), RESTART_PAUSE[1])
                    restart_at = now + pause
                    self.worker = None
                if self.worker is None and restart_at is not None and now >= restart_at:
                    self._start_worker()
                    restart_at = None
                time.sleep(0.2)
            return 0
        finally:
            self._stop_all()

    def _stop_all(self) -> None:
        running = [p for p in (self.worker, self.node) if p is not None and p.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + GRACE
        for proc in running:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def run_node(
    kit: Path,
    data: Path,
    env: dict[str, str],
    *,
    schema: Path | None = None,
    port: int = 9094,
    superlink: str | None = None,
    poll_interval: float = supernode.DEFAULT_POLL,
    options: Mapping[str, bool | int] | None = None,
) -> int:
    """Run the node until SIGTERM/SIGINT or until the SuperNode exits; its exit code."""
    with private_secret() as secret:
        commands = node_commands(
            kit, data, secret, schema=schema, port=port, superlink=superlink,
            poll_interval=poll_interval, options=options,
        )  # fmt: skip
        return Supervisor(commands, env).run()


def node_start_command(
    kit: Path,
    data: Path,
    *,
    schema: Path | None = None,
    port: int = 9094,
    poll_interval: float | None = None,
    options: Sequence[str] = (),
) -> list[str]:
    """`jointcredit node start ...` as a command line (for demos, tests and scripts that run
    a node as its own process, the way an institution does); `options`: `KEY=VALUE` each."""
    cmd = [flower_bin("jointcredit"), "node", "start", "--kit", str(kit), "--data", str(data)]
    if schema is not None:
        cmd += ["--schema", str(schema)]
    for option in options:
        cmd += ["--node-config", option]
    if poll_interval is not None:
        cmd += ["--poll-interval", str(poll_interval)]
    return [*cmd, "--port", str(port)]
