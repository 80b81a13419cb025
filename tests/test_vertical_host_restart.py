"""A deployed node's vertical session host that dies (crash, OOM kill, `kill -9`) is restarted
by the node's worker: the host runs as the worker starts it (`deploy.session_host`), a party's
session is made there, the host is killed, and after the worker's check the next message of
that session is refused naming its run as lost (a hello for it too: no fresh session in the
middle of a run), while a new run's session works. The worker's task loop runs the check
before each poll."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest

from jointcredit.client import vertical_app
from jointcredit.client import vertical_channel as channel
from jointcredit.client.vertical_app import Request
from jointcredit.client.vertical_host import SessionServer, _Handler
from jointcredit.client.vertical_registry import SESSIONS_FILE, Registry
from jointcredit.deploy import session_host as deploy_session_host
from jointcredit.deploy.app_worker import TaskWorker
from jointcredit.deploy.session_host import SessionHost, session_host
from jointcredit.federation import vertical as v
from jointcredit.federation.session_socket import SOCKET_ENV, SOCKET_NAME
from jointcredit.federation.vertical import VerticalSettings
from jointcredit.trust.keyset import TRUST_FILE, create_key_set

pytestmark = pytest.mark.integration  # the host is a process of its own, as on a node

OLD, NEW, NODE = 41, 42, 5


@pytest.fixture(scope="module")
def run_config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    keys_dir = tmp_path_factory.mktemp("keys")
    create_key_set(keys_dir, ["bank", "platform"], federation="restart-test")
    settings = VerticalSettings.model_validate(
        {"synthetic-rows": 200, "keys-dir": str(keys_dir), "trust-file": str(keys_dir / TRUST_FILE)}
    )
    return dict(settings.to_run_config())


@pytest.fixture
def host() -> Iterator[SessionHost]:
    with session_host() as started:
        yield started


def _send(host: SessionHost | Path, run: int, kind: str, config: dict[str, object]) -> str:
    """The role a hello gets, or for a PSI message the names of its reply's arrays (`host`:
    the host, or its socket's path)."""
    path = host.path if isinstance(host, SessionHost) else host
    if kind == v.HELLO:
        content = v.content(1, v.HELLO_ACTION)
    else:  # a message only a session that already exists can take
        blinded = np.zeros((2, 32), dtype=np.uint8)
        content = v.content(3, v.PSI_REBLIND, {v.BLINDED: blinded}, party="platform")
    node_config = {"partition-id": 1, "num-partitions": 2}  # the platform, simulated
    req = Request(run, NODE, kind, content, dict(config), node_config)
    reply = channel.forward(str(path), req, timeout=60)
    return str(v.request(reply)[v.ROLE]) if kind == v.HELLO else ",".join(v.arrays(reply))


def _kill(host: SessionHost) -> None:
    assert host.proc is not None
    os.kill(host.proc.pid, signal.SIGKILL)
    host.proc.wait()


def test_a_killed_host_is_restarted_and_names_the_lost_session(
    host: SessionHost, run_config: dict[str, object]
) -> None:
    assert os.environ[SOCKET_ENV] == str(host.path)
    assert _send(host, OLD, v.HELLO, run_config) == v.FEATURE_ROLE
    registry = json.loads((host.directory / SESSIONS_FILE).read_text())
    assert registry["live"] == [[OLD, NODE]]  # ids only: nothing of the session's secrets
    assert host.check() and host.restarts == 0  # alive: left alone

    _kill(host)
    with pytest.raises(channel.ChannelError, match="not reachable"):
        _send(host, OLD, v.HELLO, run_config)
    assert host.check() and host.restarts == 1
    # The old run's next message, and a hello that would start it afresh: refused, named.
    for kind in (v.PSI, v.HELLO):
        with pytest.raises(channel.ChannelError, match=rf"session of run {OLD} .*was lost"):
            _send(host, OLD, kind, run_config)
    # Why the old host stopped is in the reason too.
    with pytest.raises(channel.ChannelError, match="killed by SIGKILL"):
        _send(host, OLD, v.PSI, run_config)
    # A new run works on the new host.
    assert _send(host, NEW, v.HELLO, run_config) == v.FEATURE_ROLE
    registry = json.loads((host.directory / SESSIONS_FILE).read_text())
    assert registry == {"live": [[NEW, NODE]], "lost": [[OLD, NODE]]}
    # The channel's directory and files stay the node user's own.
    assert stat.S_IMODE(host.directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((host.directory / SESSIONS_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(host.path.stat().st_mode) & 0o077 == 0

    # Killed again: the first run is still refused, the second now lost too.
    _kill(host)
    host._next_try = 0.0  # RESTART_EVERY since the last attempt (the run above may be faster)
    assert host.check() and host.restarts == 2
    for run in (OLD, NEW):
        with pytest.raises(channel.ChannelError, match=rf"session of run {run} .*was lost"):
            _send(host, run, v.PSI, run_config)


# A node's ClientApp worker, as `clientapp_worker.main` runs its session host.
WORKER = """
import sys, time
from pathlib import Path
from jointcredit.deploy.session_host import session_host
with session_host(Path(sys.argv[1])) as host:
    print("host pid", host.proc.pid, flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("killed", ["worker", "worker and host"])
def test_the_next_worker_on_the_node_names_the_runs_lost_with_a_killed_one(
    tmp_path: Path, run_config: dict[str, object], killed: str
) -> None:
    """The whole worker is killed (`kill -9`): alone, its orphaned host sees it gone and
    stops; with its host, nothing is written at all. Either way the node's next worker uses
    the same directory under the node's state directory and its host refuses the old run by
    name, a hello for it included, instead of "not in this process" or a fresh session. The
    state directory is deeper than a unix socket's address may be long."""
    state = tmp_path / ("a-kit-kept-in-a-rather-deep-directory-" * 2) / "kit" / "state"
    path = state / deploy_session_host.HOST_DIR / SOCKET_NAME
    assert len(os.fsencode(path)) > channel.MAX_ADDRESS
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(state)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert worker.stdout is not None
        line = ""
        while not line.startswith("host pid"):  # the host's own lines come first
            line = worker.stdout.readline()
            assert line, "the worker ended before its session host started"
        host_pid = int(line.split()[-1])
        assert _send(path, OLD, v.HELLO, run_config) == v.FEATURE_ROLE
        worker.kill()
        worker.wait()
        if killed == "worker and host":
            os.kill(host_pid, signal.SIGKILL)
    finally:
        worker.kill()
        worker.wait()

    with session_host(state) as host:
        assert host.path == path
        for kind in (v.PSI, v.HELLO):
            with pytest.raises(channel.ChannelError, match=rf"session of run {OLD} .*was lost"):
                _send(host, OLD, kind, run_config)
        assert _send(host, NEW, v.HELLO, run_config) == v.FEATURE_ROLE
        assert stat.S_IMODE(host.directory.stat().st_mode) == 0o700
    # A clean stop loses the sessions it held too: the next worker refuses both runs.
    assert not path.exists()  # the stopped host removed its socket
    registry = json.loads((path.parent / SESSIONS_FILE).read_text())
    assert registry == {"live": [], "lost": [[OLD, NODE], [NEW, NODE]]}
    with session_host(state) as host:
        for run in (OLD, NEW):
            with pytest.raises(channel.ChannelError, match=rf"session of run {run} .*was lost"):
                _send(host, run, v.PSI, run_config)


def test_a_second_host_on_the_same_directory_is_refused(
    tmp_path: Path, run_config: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second node started with the same kit must not take over the first one's socket."""
    with session_host(tmp_path / "state") as first:
        monkeypatch.setattr(deploy_session_host, "LOCK_WAIT", 0.5)
        second = session_host(tmp_path / "state")
        with pytest.raises(RuntimeError, match="another vertical session host"):
            second.__enter__()
        assert first.check() and first.restarts == 0
        assert _send(first, NEW, v.HELLO, run_config) == v.FEATURE_ROLE


def test_a_host_that_cannot_start_is_retried_later(
    host: SessionHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    _kill(host)
    monkeypatch.setattr(deploy_session_host, "HOST_MODULE", "jointcredit.no_such_module")
    assert not host.check()  # the new host exits at start: reported, the worker goes on
    monkeypatch.undo()
    assert not host.check()  # within RESTART_EVERY: not tried again
    host._next_try = 0.0  # the retry interval has passed
    assert host.check() and host.restarts == 1


def test_the_worker_loop_checks_before_each_poll() -> None:
    ticks: list[int] = []
    worker = TaskWorker("127.0.0.1:1", "clientapp", _never, secret=None, poll=0.0,
                        tick=lambda: ticks.append(1))  # fmt: skip

    def acquire() -> None:
        worker.stopping = len(ticks) >= 3
        return None

    worker.acquire = acquire  # type: ignore[method-assign]
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        assert worker.serve() == 0
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert len(ticks) == 3


def _never(_token: str) -> NoReturn:
    raise AssertionError("no task was acquired")


def test_the_registry_never_writes_an_older_session_list_over_a_newer_one(
    tmp_path: Path,
) -> None:
    """Two handler threads record the sessions: the one that read the list first must not
    write it last (a live session would be missing from the file, and a restarted host would
    not refuse its run). The list is read under the registry's lock."""
    registry = Registry(tmp_path)
    live: list[tuple[int, int]] = [(1, 7)]
    first_read, go_on = threading.Event(), threading.Event()

    def slow() -> list[tuple[int, int]]:
        seen = list(live)
        first_read.set()
        go_on.wait(5)
        return seen

    a = threading.Thread(target=registry.sync, args=(slow,))
    a.start()
    first_read.wait(5)
    live.append((2, 7))  # a second session starts while the first thread is slow
    b = threading.Thread(target=registry.sync, args=(lambda: list(live),))
    b.start()
    go_on.set()
    a.join(5)
    b.join(5)
    written = json.loads((tmp_path / SESSIONS_FILE).read_text())
    assert written["live"] == [[1, 7], [2, 7]]


@pytest.fixture
def in_process() -> Iterator[tuple[Path, Registry]]:
    """The host's server and registry in threads of the test, as `vertical_host.serve` sets
    them up (short directory: unix socket paths are bounded)."""
    directory = Path(tempfile.mkdtemp(prefix="jc-reg-"))
    server = SessionServer(str(directory / SOCKET_NAME), _Handler)
    server.registry = registry = Registry(directory)
    vertical_app.register_sessions_with(registry.register)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield directory / SOCKET_NAME, registry
    finally:
        vertical_app.register_sessions_with(None)
        server.shutdown()
        server.server_close()
        for key in vertical_app.sessions():
            vertical_app.drop(key, "test over")


def test_an_answered_hello_is_on_disk_before_the_handler_syncs(
    in_process: tuple[Path, Registry],
    run_config: dict[str, object],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A host SIGKILLed after answering a hello but before its handler's sync (here: the sync
    does nothing) still lists the session, so the next host refuses the run by name rather
    than let a retried hello start it afresh mid-run."""
    path, _registry = in_process
    monkeypatch.setattr(Registry, "sync", lambda *_a, **_k: None)
    assert _send(path, OLD, v.HELLO, run_config) == v.FEATURE_ROLE
    assert json.loads((path.parent / SESSIONS_FILE).read_text())["live"] == [[OLD, NODE]]
    assert Registry(path.parent, "killed by SIGKILL").lost == [(OLD, NODE)]


def test_a_stopping_host_starts_no_session(
    in_process: tuple[Path, Registry], run_config: dict[str, object]
) -> None:
    """Handler threads outlive the server's shutdown: a hello they finish once the host has
    begun to stop is refused, not a session missing from the lost list `close` writes."""
    path, registry = in_process
    registry.stop()
    with pytest.raises(channel.ChannelError, match="stopping"):
        _send(path, NEW, v.HELLO, run_config)
    assert (NEW, NODE) not in vertical_app.sessions()
    registry.close(vertical_app.sessions)
    assert json.loads((path.parent / SESSIONS_FILE).read_text()) == {"live": [], "lost": []}
