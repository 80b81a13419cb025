"""A vertical federation deployed as partners run it: provisioned kits, the coordinator's
`jointcredit link start` (SuperLink + ServerApp worker) and two parties' `jointcredit node
start` (SuperNode + ClientApp worker + vertical session host), TLS and node authentication on
127.0.0.1, each node given only its own party's file. One such federation (a module fixture:
its start-up is a third of a test's time) serves the three tests, in file order:

1. a party's processes fail mid-run: the platform's whole node stops (SIGSTOP), then its
   session host is killed (`kill -9`); each run fails naming the platform and the step, the
   bank's session is dropped and no model is written;
2. on the same nodes (after those failures when run in file order) `jointcredit link run
   --run-config layout=vertical` runs PSI and training through the one ServerApp and ClientApp
   a deployment pins; every message runs in a fork of the node's worker, so this fails unless
   the parties' sessions outlive their messages. The signed model verifies, and the federated
   AUC equals the same learner on the joined rows in process (lossless), on the same data;
3. then `--run-config model=scorecard`, the vertical scorecard, on the same nodes: its parts
   verify and its AUC equals its central equivalent on the joined rows; the nodes are stopped
   and each party's sessions have ended with the runs.

Every process started here is stopped (SIGTERM, then SIGKILL) also when a test fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jointcredit.cli.deploy_cmds import CONNECTION
from jointcredit.client.vertical_app import VERTICAL_RUNS
from jointcredit.client.vertical_feature import SCORECARD
from jointcredit.client.vertical_registry import SESSIONS_FILE
from jointcredit.data.vertical_datasets import load_vertical_dataset, write_vertical_directory
from jointcredit.deploy import kits, link, node, processes
from jointcredit.deploy.session_host import HOST_MODULE
from jointcredit.federation.vertical import VerticalSettings
from jointcredit.simulations.vertical import (
    aligned_frames,
    scorecard_baselines,
    tree_baseline_figures,
)

ROOT = Path(__file__).resolve().parents[1]
PARTIES = ["bank", "platform"]  # the synthetic-vertical schema's parties: the kits' ids
ROWS, SEED, TREES, DEPTH = 400, 5, 2, 2
TREES_RUN = {"trees": TREES, "max-depth": DEPTH}
# Fine bins of at least 5 training rows each at ROWS (neither party counts fewer).
SCORECARD_RUN = {"model": "scorecard", "max-bins": 8, "min-category-count": 10}
# The failing runs' round-timeout (seconds one step may take; the product's default is
# longer): the stopped node's run waits it out, and a session idle this long is dropped.
STEP_TIMEOUT = 15
pytestmark = pytest.mark.e2e


class Procs:
    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs, self.env = logs, env
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, cmd: list[str]) -> None:
        with (self.logs / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.started.append(proc)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.started:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


@dataclass
class Deployed:
    """The running federation: its processes (and their logs), kits, data and sockets."""

    procs: Procs
    root: Path
    data: Path
    provisioned: kits.Provisioned
    sockets: dict[str, Path]

    @property
    def coordinator(self) -> Path:
        return self.provisioned.coordinator

    @property
    def flwr_home(self) -> Path:
        return self.root / "flwr-home"

    def runs(self, party: str) -> Path:
        """Where a party's node keeps its runs' models (its kit's state directory)."""
        return self.provisioned.kit(party) / "state" / VERTICAL_RUNS

    def node(self, party: str) -> subprocess.Popen[bytes]:
        return self.procs.started[PARTIES.index(party) + 1]  # after the link

    def run_command(self, out: Path, **extra: object) -> list[str]:
        settings = {"layout": "vertical", "seed": SEED, **extra}
        return [processes.flower_bin("jointcredit"), "link", "run", "--kit",
                str(self.coordinator), "--app", str(ROOT), "--out", str(out), "--flwr-home",
                str(self.flwr_home), "--timeout", "600",
                *[f"--run-config={k}={x}" for k, x in settings.items()]]  # fmt: skip


def _session_socket(procs: Procs, party: str) -> Path:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = re.search(r"vertical session host ready \((.+?)\)", procs.log(party))
        if found:
            return Path(found.group(1))
        time.sleep(0.5)
    raise AssertionError(f"{party}'s session host never started:\n{procs.log(party)[-3000:]}")


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    root = tmp_path_factory.mktemp("vfed")
    procs = Procs(root, processes.flower_env(root / "flwr-home"))
    try:
        data = write_vertical_directory("synthetic-vertical", root / "data", seed=SEED, rows=ROWS)
        port = processes.free_port()
        provisioned = kits.provision("vfed", PARTIES, f"127.0.0.1:{port}", root / "kits")
        coordinator, flwr_home = provisioned.coordinator, root / "flwr-home"
        procs.start("link", link.link_start_command(coordinator, root / "state"))
        processes.wait_listening(port)
        processes.write_connection(coordinator, flwr_home, CONNECTION)
        processes.register_nodes(coordinator, flwr_home, CONNECTION)
        for party in PARTIES:
            # Each node is given only its own party's file.
            own = data / party / f"{party}.parquet"
            # The bank's own say on its fairness figures (the coordinator's run config asks).
            options = ["share-fairness=true"] if party == "bank" else []
            cmd = node.node_start_command(
                provisioned.kit(party), own, schema=data / "schema.toml",
                port=processes.free_port(), options=options,
            )  # fmt: skip
            procs.start(party, cmd)
        sockets = {party: _session_socket(procs, party) for party in PARTIES}
        yield Deployed(procs, root, data, provisioned, sockets)
    finally:
        procs.stop_all()


def _own_part(kit: Path, old: frozenset[Path] = frozenset()) -> Path:
    """The one run's model directory a party wrote under its kit's state directory (other
    than the `old` runs')."""
    (found,) = set((kit / "state" / VERTICAL_RUNS).glob("*/model")) - old
    return found


def _live(socket: Path) -> list[list[int]]:
    return list(json.loads((socket.parent / SESSIONS_FILE).read_text())["live"])


def _wait(what: str, condition: Callable[[], object], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
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


def _server_log(output: str) -> str:
    """The failed run's ServerApp log, where `link run` says it is."""
    found = re.search(r"the ServerApp's log: (\S+)", output)
    assert found, output
    return Path(found.group(1)).read_text(errors="replace")


def _into_training(fed: Deployed, bank_log: int) -> None:
    """Both parties' sessions exist and the bank has been asked a training step since its log
    was `bank_log` long: PSI is over, training under way."""
    bank, platform = (fed.sockets[p] for p in PARTIES)
    _wait("both parties' sessions", lambda: _live(bank) and _live(platform), 300)
    _wait(
        "the run's first training step at the bank",
        lambda: "Receiving: train." in fed.procs.log("bank")[bank_log:],
        300,
    )


def _start_failing_run(fed: Deployed, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        fed.run_command(out, **TREES_RUN, **{"round-timeout": STEP_TIMEOUT}),
        env={**fed.procs.env, "COLUMNS": "400"}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def test_a_stopped_node_and_a_killed_session_host_end_the_run_cleanly(
    deployed: Deployed,
) -> None:
    """1. The platform's whole node stops (SIGSTOP of its process group): after the step
    timeout the run fails, its ServerApp log naming the platform and the step; the bank's
    session is dropped (by the coordinator's abort, or as idle: it waited as long as the
    coordinator) and the bank writes no model. 2. The platform's session host is killed
    (`kill -9`): the node's worker starts another, the run fails at once naming the platform
    and the step, and the bank's session is dropped on the coordinator's abort (not later, as
    idle). That a next run completes on the same nodes is the next test's run."""
    fed, procs = deployed, deployed.procs
    bank, platform = (fed.sockets[p] for p in PARTIES)
    platform_node = fed.node("platform")
    models = len(list(fed.runs("bank").glob("*/model")))

    # 1. The platform's node stops answering mid-run.
    run = _start_failing_run(fed, fed.root / "run1")
    _into_training(fed, len(procs.log("bank")))
    os.killpg(platform_node.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        _wait("the bank's session dropped", lambda: not _live(bank), STEP_TIMEOUT + 30)
        dropped_after = time.monotonic() - stopped
        output, _ = run.communicate(timeout=120)
    finally:
        os.killpg(platform_node.pid, signal.SIGCONT)
    assert run.returncode == 1, output
    log = _server_log(output)
    # No reply within the step timeout, or, if the SuperLink noticed the node's heartbeats
    # stop first, an error reply in its place: either way the platform and the step named.
    said = re.findall(
        rf"platform(?:: no reply within {STEP_TIMEOUT} s to| failed) step \d+ \([^)]*\)", log
    )
    assert said, log[-3000:]
    # By the coordinator's abort or, idle as long as the coordinator waited, as idle.
    assert dropped_after < STEP_TIMEOUT + 15
    assert len(list(fed.runs("bank").glob("*/model"))) == models, "a failed run's model"
    print(f"stopped node: {said[-1]}")

    # 2. The platform's session host is killed mid-run.
    _wait("the platform's stale session gone", lambda: not _live(platform), STEP_TIMEOUT + 30)
    bank_log = len(procs.log("bank"))
    run = _start_failing_run(fed, fed.root / "run2")
    _into_training(fed, bank_log)
    os.kill(_host_pid(platform), signal.SIGKILL)
    output, _ = run.communicate(timeout=300)
    assert run.returncode == 1, output
    log = _server_log(output)
    said = re.findall(r"platform failed step \d+ \([^)]*\)[^\n]*", log)
    assert said, log[-3000:]
    _wait("the platform's host restarted", lambda: "restarting it" in procs.log("platform"), 30)
    # The run failed at once: the bank's session went on the coordinator's abort, not later
    # as idle.
    _wait("the bank's session dropped", lambda: not _live(bank), 30)
    assert "dropped (idle)" not in procs.log("bank")[bank_log:]
    assert len(list(fed.runs("bank").glob("*/model"))) == models, "a failed run's model"
    print(f"killed host: {said[-1][:300]}")


def _clean_run(
    fed: Deployed, out: Path, settings: dict[str, object], *verify_args: str
) -> tuple[dict[str, Any], float]:
    """Run `link run` to completion: its metrics.json and seconds, after checking that every
    relayed reply was verified and that each party wrote its own part in its own kit's state
    directory (none where the run config says), the parts, put together, verifying."""
    old = {p: frozenset(fed.runs(p).glob("*/model")) for p in PARTIES}
    started = time.monotonic()
    run = subprocess.run(
        fed.run_command(out, **settings),
        env={**fed.procs.env, "COLUMNS": "400"},  # its summary on one line
        capture_output=True,
        text=True,
        timeout=900,
    )
    seconds = time.monotonic() - started
    logs = "\n".join(fed.procs.log(p)[-3000:] for p in ("link", *PARTIES))
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n{logs}"
    assert "AUC (label party's test rows)" in run.stdout

    metrics: dict[str, Any] = json.loads((out / "metrics.json").read_text())
    vertical = metrics["vertical"]
    assert metrics["layout"] == "vertical"
    assert vertical["parties"] == PARTIES and vertical["label_party"] == "bank"
    assert vertical["verified_replies"] == vertical["messages"] > 0
    # The platform's part put beside the bank's, each signed part verified by its own key.
    assert not (out / "model").exists()
    model = _own_part(fed.provisioned.kit("bank"), old["bank"])
    shutil.copytree(
        _own_part(fed.provisioned.kit("platform"), old["platform"]) / "parties" / "platform",
        model / "parties" / "platform",
    )
    verify = subprocess.run(
        [processes.flower_bin("jointcredit"), "verify", str(model),
         "--trust", str(out / "trust.json"), *verify_args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    return metrics, seconds


def test_two_parties_run_psi_and_training_over_real_supernodes(deployed: Deployed) -> None:
    fed = deployed
    # A session host restarted (the test before) listens on the same socket again.
    _wait("both session hosts' sockets", lambda: all(map(Path.exists, fed.sockets.values())), 60)
    for sock in fed.sockets.values():
        # Node-local: a unix socket in a directory only the node's user may enter.
        assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
        assert stat.S_ISSOCK(sock.stat().st_mode)
    metrics, seconds = _clean_run(fed, fed.root / "run", TREES_RUN)
    vertical = metrics["vertical"]

    # The same data in process: PSI's intersection, and the same learner on the joined rows
    # with the same bins gives the deployed federation's AUC (lossless over real nodes).
    same = VerticalSettings(dataset=str(fed.data), trees=TREES, max_depth=DEPTH, seed=SEED)
    joined = load_vertical_dataset(str(fed.data))
    frames, _ = aligned_frames(joined, same)
    assert vertical["intersection_size"] == len(frames["bank"])
    centralized, _, fairness = tree_baseline_figures(joined, same)
    assert metrics["federated"]["auc"] == pytest.approx(centralized["auc"], abs=1e-9)
    assert metrics["federated"]["brier"] == pytest.approx(centralized["brier"], abs=1e-9)
    # The bank's protected attributes: its figures through the deployed reply path, the
    # joined rows' exactly (tests/test_vertical_fairness_run.py: nothing of them elsewhere).
    assert fairness is not None and metrics["fairness"] == fairness["centralized"]
    print(f"vertical deployed run: {seconds:.1f} s, {vertical}")


def test_the_vertical_scorecard_runs_over_the_same_supernodes(deployed: Deployed) -> None:
    """The scorecard selected by the run config alone, on the nodes the trees ran on: its
    parts verify as a scorecard with the bank as label party, its AUC is its central
    equivalent's on the joined rows, and the platform refused no request of it."""
    fed, procs = deployed, deployed.procs
    logs_before = {party: len(procs.log(party)) for party in PARTIES}
    metrics, seconds = _clean_run(
        fed, fed.root / "scorecard", SCORECARD_RUN, "--label-party", "bank"
    )
    assert metrics["config"]["model"] == "scorecard" and "trees" not in metrics["config"]
    same = VerticalSettings.model_validate(
        {"dataset": str(fed.data), "seed": SEED, **SCORECARD_RUN}
    )
    centralized, _ = scorecard_baselines(load_vertical_dataset(str(fed.data)), same)
    for k in ("auc", "brier"):
        assert metrics["federated"][k] == pytest.approx(centralized[k], abs=1e-9), k
    # The platform took each scorecard step once and refused none (a request failing its
    # verification raises in the handler, which the node logs with its traceback).
    platform_log = procs.log("platform")[logs_before["platform"] :]
    assert platform_log.count("Receiving: train.vertical_serve") == len(SCORECARD)
    assert not re.search(r"ProtocolError|Traceback|refus", platform_log), platform_log[-3000:]
    auc = (metrics["federated"]["auc"], centralized["auc"])
    print(f"vertical deployed scorecard: {seconds:.1f} s, AUC {auc}, {metrics['vertical']}")

    # Each session ended with its run (none left to drop as idle, none recorded live); stopped
    # nodes leave no channel behind, only their private directory and its registry.
    procs.stop_all()
    for party, sock in fed.sockets.items():
        assert "dropped (idle)" not in procs.log(party)[logs_before[party] :]
        assert not sock.exists()
        assert _live(sock) == []
