"""A deployed vertical federation (as `test_vertical_deployment`: `link start`, a bank's and
a platform's `node start`, TLS, node authentication) when a party's processes fail mid-run:

1. the platform's whole node stops (SIGSTOP of its process group): after `round-timeout` the
   run fails, its ServerApp log naming the platform and the step; the bank's session is
   dropped (by the coordinator's abort, or as idle: it waited as long as the coordinator)
   and the bank writes no model;
2. the platform's session host is killed (`kill -9`): the node's worker starts another, the
   run fails at once naming the platform and the step, and the bank's session is dropped on
   the coordinator's abort (not later, as idle);
3. the next run completes on the same nodes.

Every process started here is stopped (SIGTERM, then SIGKILL) also when the test fails.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_vertical_deployment import PARTIES, ROOT, SEED, Procs, _session_socket

from jointcredit.cli.deploy_cmds import CONNECTION
from jointcredit.client.vertical_app import VERTICAL_RUNS
from jointcredit.client.vertical_registry import SESSIONS_FILE
from jointcredit.data.vertical_datasets import write_vertical_directory
from jointcredit.deploy import kits, link, node, processes
from jointcredit.deploy.session_host import HOST_MODULE

pytestmark = pytest.mark.e2e

ROWS, TREES, DEPTH = 400, 2, 2  # small, yet enough steps to stop the platform mid-training
STEP_TIMEOUT = 30  # round-timeout: seconds one step may take
INTO_TRAINING = 15.0  # seconds after both sessions exist: PSI is over


def _live(socket: Path) -> list[list[int]]:
    return list(json.loads((socket.parent / SESSIONS_FILE).read_text())["live"])


def _wait(what: str, condition: object, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {seconds:g} s: {what}")


def _host_pid(socket: Path) -> int:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if HOST_MODULE.encode() in cmd and str(socket).encode() in cmd:
            return int(entry.name)
    raise AssertionError(f"no session host on {socket}")


def _start_run(
    procs: Procs, flwr_home: Path, coordinator: Path, out: Path
) -> subprocess.Popen[str]:
    settings = {"layout": "vertical", "trees": TREES, "max-depth": DEPTH, "seed": SEED,
                "round-timeout": STEP_TIMEOUT}  # fmt: skip
    return subprocess.Popen(
        [processes.flower_bin("jointcredit"), "link", "run", "--kit", str(coordinator),
         "--app", str(ROOT), "--out", str(out), "--flwr-home", str(flwr_home),
         "--timeout", "600", *[f"--run-config={k}={x}" for k, x in settings.items()]],
        env={**procs.env, "COLUMNS": "400"}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _server_log(flwr_home: Path, output: str) -> str:
    """The failed run's ServerApp log, where `link run` says it is."""
    found = re.search(r"the ServerApp's log: (\S+)", output)
    assert found, output
    return Path(found.group(1)).read_text(errors="replace")


def test_a_stopped_node_and_a_killed_session_host_end_the_run_cleanly(tmp_path: Path) -> None:
    procs = Procs(tmp_path, processes.flower_env(tmp_path / "flwr-home"))
    try:
        _run_all(tmp_path, procs)
    finally:
        procs.stop_all()


def _run_all(tmp_path: Path, procs: Procs) -> None:
    data = write_vertical_directory("synthetic-vertical", tmp_path / "data", seed=SEED, rows=ROWS)
    port = processes.free_port()
    provisioned = kits.provision("vfed", PARTIES, f"127.0.0.1:{port}", tmp_path / "kits")
    coordinator, flwr_home = provisioned.coordinator, tmp_path / "flwr-home"
    procs.start("link", link.link_start_command(coordinator, tmp_path / "state"))
    processes.wait_listening(port)
    processes.write_connection(coordinator, flwr_home, CONNECTION)
    processes.register_nodes(coordinator, flwr_home, CONNECTION)
    for party in PARTIES:
        own = data / party / f"{party}.parquet"
        cmd = node.node_start_command(
            provisioned.kit(party), own, schema=data / "schema.toml", port=processes.free_port()
        )
        procs.start(party, cmd)
    bank, platform = (_session_socket(procs, p) for p in PARTIES)
    platform_node = procs.started[PARTIES.index("platform") + 1]
    bank_runs = provisioned.kit("bank") / "state" / VERTICAL_RUNS

    # 1. The platform's node stops answering mid-run.
    run = _start_run(procs, flwr_home, coordinator, tmp_path / "run1")
    _wait("both parties' sessions", lambda: _live(bank) and _live(platform), 300)
    time.sleep(INTO_TRAINING)
    os.killpg(platform_node.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        _wait("the bank's session dropped", lambda: not _live(bank), STEP_TIMEOUT + 30)
        dropped_after = time.monotonic() - stopped
        output, _ = run.communicate(timeout=120)
    finally:
        os.killpg(platform_node.pid, signal.SIGCONT)
    assert run.returncode == 1, output
    log = _server_log(flwr_home, output)
    # No reply within the step timeout, or, if the SuperLink noticed the node's heartbeats
    # stop first, an error reply in its place: either way the platform and the step named.
    said = re.findall(r"platform(?:: no reply within 30 s to| failed) step \d+ \([^)]*\)", log)
    assert said, log[-3000:]
    # By the coordinator's abort or, idle as long as the coordinator waited, as idle.
    assert dropped_after < STEP_TIMEOUT + 15
    assert not list(bank_runs.glob("*/model")), "a model written by a failed run"
    print(f"stopped node: {said[-1]}")

    # 2. The platform's session host is killed mid-run.
    _wait("the platform's stale session gone", lambda: not _live(platform), STEP_TIMEOUT + 30)
    bank_log = len(procs.log("bank"))
    run = _start_run(procs, flwr_home, coordinator, tmp_path / "run2")
    _wait("both parties' sessions", lambda: _live(bank) and _live(platform), 300)
    time.sleep(INTO_TRAINING)
    os.kill(_host_pid(platform), signal.SIGKILL)
    output, _ = run.communicate(timeout=300)
    assert run.returncode == 1, output
    log = _server_log(flwr_home, output)
    said = re.findall(r"platform failed step \d+ \([^)]*\)[^\n]*", log)
    assert said, log[-3000:]
    _wait("the platform's host restarted", lambda: "restarting it" in procs.log("platform"), 30)
    # The run failed at once: the bank's session went on the coordinator's abort, not later
    # as idle.
    _wait("the bank's session dropped", lambda: not _live(bank), 30)
    assert "dropped (idle)" not in procs.log("bank")[bank_log:]
    assert not list(bank_runs.glob("*/model")), "a model written by a failed run"
    print(f"killed host: {said[-1][:300]}")

    # 3. A new run on the same nodes completes.
    run = _start_run(procs, flwr_home, coordinator, tmp_path / "run3")
    output, _ = run.communicate(timeout=600)
    assert run.returncode == 0, output
    assert "AUC (label party's test rows)" in output
    assert len(list(bank_runs.glob("*/model"))) == 1
