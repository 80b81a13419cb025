"""Where a simulation's Ray runs: a private instance on loopback only, or an existing cluster
whose nodes all host institutions (and which outlives the run)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from ray_cluster import LoopbackCluster, is_loopback, listening, loopback_cluster
from ray_probe import placements

from jointcredit.federation.settings import RunSettings
from jointcredit.simulations import engine
from jointcredit.simulations.simulate import simulate


def _settings(out: Path, institutions: int, **extra: Any) -> RunSettings:
    return RunSettings.from_run_config(
        {
            **extra,
            "dataset": "synthetic",
            "institutions": institutions,
            "synthetic-rows": 300,
            "model": "logreg",
            "rounds": 1,
            "finetune-epochs": 1,
            "checkpoints": False,
            "out-dir": str(out),
        }
    )


class _Listening:
    """Every listening socket of this process and its descendants, sampled while a run goes."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str, int]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process(os.getpid())
        while not self._stop.wait(0.25):
            self.seen |= set(listening([me, *me.children(recursive=True)]))

    def __enter__(self) -> _Listening:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.integration
def test_a_local_simulation_listens_on_loopback_only(tmp_path: Path) -> None:
    with _Listening() as sockets:
        metrics = simulate(
            _settings(tmp_path / "out", 4, **{"fraction-train": 0.5}),
            with_baselines=False,
            with_audit=False,
        )
    # (and fraction-train: half of the institutions trained, all of them evaluated)
    assert [len(r.train_institutions) for r in metrics.rounds] == [2]
    assert len(metrics.rounds[0].per_institution_auc) == 4
    names = {name for name, _, _ in sockets.seen}
    assert "gcs_server" in names and "raylet" in names, sockets.seen  # Ray was seen running
    exposed = sorted(s for s in sockets.seen if not is_loopback(s[1]))
    assert not exposed, f"listening beyond loopback: {exposed}"


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LoopbackCluster]:
    with loopback_cluster(cpus_per_node=1) as started:
        yield started


@pytest.mark.e2e
def test_a_federation_runs_across_a_two_node_ray_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cluster: LoopbackCluster
) -> None:
    monkeypatch.setattr(engine, "CLIENT_APP", "ray_probe:app")
    raylets = {p.pid for p in cluster.raylets()}
    assert len(raylets) == 2
    metrics = simulate(
        _settings(tmp_path / "out", 4),
        with_baselines=False,
        with_audit=False,
        ray_address=cluster.address,
    )
    assert len(metrics.institutions) == 4 and metrics.security.rejected_replies == 0
    made = placements(tmp_path)
    # query, train, evaluate, prior, final evaluate (with the reference's counts), fairness
    # groups and counts: every reply recorded where it was made
    assert len(made) == metrics.security.verified_replies == 4 * 7
    assert {m["partition"] for m in made} == {0, 1, 2, 3}
    # one actor per node (1 CPU each): both nodes' workers made replies
    assert len({m["node"] for m in made}) == 2
    assert {m["ppid"] for m in made} == raylets
    # the cluster outlives the run, and nothing of it listens beyond loopback
    assert {p.pid for p in cluster.raylets()} == raylets
    sockets = listening(cluster.processes())
    assert sockets and all(is_loopback(address) for _, address, _ in sockets), sockets


@pytest.mark.e2e
def test_flwr_run_takes_the_cluster_from_ray_address(
    tmp_path: Path, cluster: LoopbackCluster
) -> None:
    raylets = {p.pid for p in cluster.raylets()}
    actors: set[int] = set()  # raylets whose workers hosted a ClientApp actor
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.25):
            for proc in cluster.processes():
                with contextlib.suppress(psutil.Error):
                    if "ClientAppActor" in proc.name():
                        actors.add(proc.ppid())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    env = {
        **os.environ,
        "FLWR_HOME": str(tmp_path / "flwr-home"),
        "OUT": str(tmp_path / "out"),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "RAY_ADDRESS": cluster.address,
    }
    try:
        proc = subprocess.run(
            ["bash", "scripts/flwr_run_local.sh", "2", "rounds=1 finetune-epochs=1"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        stop.set()
        watcher.join()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "finished:completed" in proc.stdout
    assert actors == raylets  # an actor on each node (1 CPU each, 2 institutions)
    assert {p.pid for p in cluster.raylets()} == raylets  # and the cluster is still up


def _actors(cluster: LoopbackCluster) -> list[psutil.Process]:
    found = []
    for proc in cluster.processes():
        with contextlib.suppress(psutil.Error):
            if "ClientAppActor" in proc.name():
                found.append(proc)
    return found


@pytest.mark.e2e
def test_a_killed_run_leaves_the_cluster_running(tmp_path: Path, cluster: LoopbackCluster) -> None:
    raylets = {p.pid for p in cluster.raylets()}
    command = [
        str(Path(sys.executable).parent / "jointcredit"),
        "simulate", "--dataset=synthetic", "--institutions=4", "--synthetic-rows=300",
        "--model=logreg", "--rounds=20", "--no-baselines", "--no-audit",
        f"--ray-address={cluster.address}", f"--out={tmp_path / 'out'}",
    ]  # fmt: skip
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not _actors(cluster) and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.25)
    assert _actors(cluster), "the run's actors never started on the cluster"
    run.kill()  # SIGKILL: the run's own handlers never run, its watchdog does
    run.wait()
    deadline = time.monotonic() + 60
    while _actors(cluster) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _actors(cluster)  # Ray ended the dead run's actors...
    assert {p.pid for p in cluster.raylets()} == raylets  # ...and the cluster is still up
    assert not (tmp_path / "out").exists()


def test_a_ray_address_must_be_host_and_port() -> None:
    assert engine.parse_ray_address("10.0.0.5:6379") == ("10.0.0.5", 6379)
    assert engine.parse_ray_address("[::1]:6379") == ("::1", 6379)
    for bad in ("10.0.0.5", ":6379", "host:port", "host:70000"):
        with pytest.raises(engine.RayAddressError, match="HOST:PORT"):
            engine.parse_ray_address(bad)
    assert engine.is_loopback("127.0.0.1") and engine.is_loopback("localhost")
    assert not engine.is_loopback("10.0.0.5") and not engine.is_loopback("head.example")
