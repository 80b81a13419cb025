"""A long-lived app worker: polls a Flower Runtime API for tasks of one type and runs each
in a fork of itself, the app already imported.

Flower's `flower-superexec` starts a fresh `flwr-clientapp` / `flwr-serverapp` process per
task, which imports Flower, torch and the app before doing anything. Both of jointcredit's
workers (`clientapp_worker` beside a SuperNode, `serverapp_worker` beside the SuperLink) do
what that process would do, in a fork: still one process per task, nothing left to import.
Flower has no warm executor for ClientApps or ServerApps (only for its own agent, connector
and model apps), hence this module.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from types import FrameType
from typing import NoReturn

STOP_GRACE = 10.0  # seconds a running task gets to finish on SIGTERM
ACQUIRE_METHOD = "/flwr.proto.Runtime/AcquireTask"


def import_component(reference: str, kind: type) -> object:
    """Import `module:attribute` and check it is a `kind` (Flower's ClientApp or ServerApp)."""
    module_name, _, attributes = reference.partition(":")
    found: object = importlib.import_module(module_name)
    for name in attributes.split(".") if attributes else []:
        found = getattr(found, name)
    if not isinstance(found, kind):
        raise TypeError(f"{reference} is not a Flower {kind.__name__}")
    return found


def fresh_randomness() -> None:
    """A fork starts with its parent's pseudo-random state; a fresh process would not.
    Python's `random` reseeds itself after fork; NumPy's global generator (Flower's SecAgg+
    quantisation draws from it) does not. Torch's default seed is fixed in any process."""
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


def run_forked_task(body: Callable[[], None]) -> NoReturn:
    """In the fork: `body` (what the Flower process would run), then leave without the
    parent's exit handlers, with the process's exit code."""
    code = 1
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        fresh_randomness()
        body()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # a task's failure must not reach the worker's loop
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def read_secret(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as fh:
        return fh.read()


class TaskWorker:
    """Poll the Runtime API at `address` for tasks of `task_type`; fork one child per task,
    which calls `run_task(token)` (and must not return: see `run_forked_task`). `tick`, when
    given, runs before each poll (the ClientApp worker restarts its session host there)."""

    def __init__(
        self,
        address: str,
        task_type: str,
        run_task: Callable[[str], NoReturn],
        *,
        secret: bytes | None,
        poll: float,
        root_certificates: bytes | None = None,
        tick: Callable[[], object] | None = None,
    ) -> None:
        from flwr.supercore.interceptors import (
            RuntimeVersionHttpInterceptor,
            SuperExecAuthHttpInterceptor,
        )
        from flwr.supercore.protobuf.client import ProtobufClientInterceptor
        from flwr.supercore.retry import make_simple_http_retry_invoker
        from flwr.supercore.runtime import RuntimeHttpClient

        interceptors: list[ProtobufClientInterceptor] = [
            RuntimeVersionHttpInterceptor(component_name="SuperExec")
        ]
        if secret is not None:
            interceptors.append(
                SuperExecAuthHttpInterceptor(
                    master_secret=secret, protected_methods=frozenset({ACQUIRE_METHOD})
                )
            )
        self.address = address
        self.task_type = task_type
        self.run_task = run_task
        self.poll = poll
        self.tick = tick
        self.client = RuntimeHttpClient.from_server_address(
            server_address=address,
            insecure=root_certificates is None,
            root_certificates=root_certificates,
            interceptors=interceptors,
            retry_invoker=make_simple_http_retry_invoker(),
        )
        self.children: set[int] = set()
        self.stopping = False
        self.parent = os.getppid()

    def _stop(self, _sig: int, _frame: FrameType | None) -> None:
        self.stopping = True

    def _reap(self) -> None:
        for pid in list(self.children):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                self.children.discard(pid)

    def acquire(self) -> str | None:
        """A task's token, or None when there is none."""
        from flwr.proto.runtime_pb2 import AcquireTaskRequest

        res = self.client.AcquireTask(AcquireTaskRequest(supported_task_types=[self.task_type]))
        if res.HasField("task") and res.token:
            return str(res.token)
        return None

    def serve(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        try:
            while not self.stopping and os.getppid() == self.parent:
                self._reap()
                if self.tick is not None:
                    self.tick()
                token = self.acquire()
                if token is None:
                    time.sleep(self.poll)
                    continue
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    self.run_task(token)
                self.children.add(pid)
        finally:
            self._shutdown()
        return 0

    def _signal_children(self, sig: int) -> None:
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _shutdown(self) -> None:
        self._signal_children(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while self.children and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.05)
        self._signal_children(signal.SIGKILL)
        self.client.close()
