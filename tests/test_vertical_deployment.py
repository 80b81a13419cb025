"""A vertical federation deployed as partners run it: provisioned kits, the coordinator's
`jointcredit link start` (SuperLink + ServerApp worker) and two parties' `jointcredit node
start` (SuperNode + ClientApp worker + vertical session host), TLS and node authentication on
127.0.0.1, each node given only its own party's file. `jointcredit link run --run-config
layout=vertical` runs PSI and training through the one ServerApp and ClientApp a deployment
pins; every message runs in a fork of the node's worker, so this fails unless the parties'
sessions outlive their messages. The signed model verifies, and the federated AUC equals the
same learner on the joined rows in process (lossless), on the same data.

Every process started here is stopped (SIGTERM, then SIGKILL) also when the test fails.
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
from collections.abc import Iterator
from pathlib import Path

import pytest

from jointcredit.cli.deploy_cmds import CONNECTION
from jointcredit.client.vertical_app import VERTICAL_RUNS
from jointcredit.data.vertical_datasets import load_vertical_dataset, write_vertical_directory
from jointcredit.deploy import kits, link, node, processes
from jointcredit.federation.vertical import VerticalSettings
from jointcredit.simulations.vertical import aligned_frames, baselines

ROOT = Path(__file__).resolve().parents[1]
PARTIES = ["bank", "platform"]  # the synthetic-vertical schema's parties: the kits' ids
ROWS, SEED, TREES, DEPTH = 400, 5, 2, 2
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


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    running = Procs(tmp_path, processes.flower_env(tmp_path / "flwr-home"))
    try:
        yield running
    finally:
        running.stop_all()


def _session_socket(procs: Procs, party: str) -> Path:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = re.search(r"vertical session host ready \((.+?)\)", procs.log(party))
        if found:
            return Path(found.group(1))
        time.sleep(0.5)
    raise AssertionError(f"{party}'s session host never started:\n{procs.log(party)[-3000:]}")


def _own_part(kit: Path) -> Path:
    """The one run's model directory a party wrote under its kit's state directory."""
    (found,) = (kit / "state" / VERTICAL_RUNS).glob("*/model")
    return found


def test_two_parties_run_psi_and_training_over_real_supernodes(
    tmp_path: Path, procs: Procs
) -> None:
    data = write_vertical_directory("synthetic-vertical", tmp_path / "data", seed=SEED, rows=ROWS)
    schema = data / "schema.toml"
    port = processes.free_port()
    provisioned = kits.provision("vfed", PARTIES, f"127.0.0.1:{port}", tmp_path / "kits")
    coordinator, flwr_home = provisioned.coordinator, tmp_path / "flwr-home"
    procs.start("link", link.link_start_command(coordinator, tmp_path / "state"))
    processes.wait_listening(port)
    processes.write_connection(coordinator, flwr_home, CONNECTION)
    processes.register_nodes(coordinator, flwr_home, CONNECTION)
    for party in PARTIES:
        # Each node is given only its own party's file.
        own = data / party / f"{party}.parquet"
        cmd = node.node_start_command(
            provisioned.kit(party), own, schema=schema, port=processes.free_port()
        )
        procs.start(party, cmd)
    sockets = [_session_socket(procs, party) for party in PARTIES]
    for sock in sockets:
        # Node-local: a unix socket in a directory only the node's user may enter.
        assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
        assert stat.S_ISSOCK(sock.stat().st_mode)

    out = tmp_path / "run"
    settings = {"layout": "vertical", "trees": TREES, "max-depth": DEPTH, "seed": SEED}
    started = time.monotonic()
    run = subprocess.run(
        [processes.flower_bin("jointcredit"), "link", "run", "--kit", str(coordinator),
         "--app", str(ROOT), "--out", str(out), "--flwr-home", str(flwr_home),
         "--timeout", "600", *[f"--run-config={k}={x}" for k, x in settings.items()]],
        env=procs.env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    seconds = time.monotonic() - started
    logs = "\n".join(procs.log(p)[-3000:] for p in ("link", *PARTIES))
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n{logs}"
    assert "AUC (label party's test rows)" in run.stdout

    metrics = json.loads((out / "metrics.json").read_text())
    vertical = metrics["vertical"]
    assert metrics["layout"] == "vertical"
    assert vertical["parties"] == PARTIES and vertical["label_party"] == "bank"
    # Every relayed reply was verified, and the signed model verifies part by part.
    assert vertical["verified_replies"] == vertical["messages"] > 0
    # Each party wrote its part in its own kit's state directory (its node config's), none
    # where the run config (the coordinator) says; the platform's part put beside the bank's.
    assert not (out / "model").exists()
    model = _own_part(provisioned.kit("bank"))
    shutil.copytree(
        _own_part(provisioned.kit("platform")) / "parties" / "platform",
        model / "parties" / "platform",
    )
    verify = subprocess.run(
        [processes.flower_bin("jointcredit"), "verify", str(model),
         "--trust", str(out / "trust.json")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # The same data in process: PSI's intersection, and the same learner on the joined rows
    # with the same bins gives the deployed federation's AUC (lossless over real nodes).
    same = VerticalSettings(dataset=str(data), trees=TREES, max_depth=DEPTH, seed=SEED)
    joined = load_vertical_dataset(str(data))
    frames, _ = aligned_frames(joined, same)
    assert vertical["intersection_size"] == len(frames["bank"])
    centralized, _ = baselines(joined, same)
    assert metrics["federated"]["auc"] == pytest.approx(centralized["auc"], abs=1e-9)
    assert metrics["federated"]["brier"] == pytest.approx(centralized["brier"], abs=1e-9)
    # Each session ended with the run (none left to drop as idle); stopped nodes leave no
    # channel behind.
    print(f"vertical deployed run: {seconds:.1f} s, {vertical}")
    procs.stop_all()
    for party, sock in zip(PARTIES, sockets, strict=True):
        assert "dropped (idle)" not in procs.log(party)
        assert not sock.parent.exists()
