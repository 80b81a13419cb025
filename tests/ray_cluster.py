"""A Ray cluster of two nodes on this machine, every server of both on 127.0.0.1, and its
teardown by pid (never `ray stop`: that stops every Ray on the machine, other runs' too).

The head starts with Ray's cluster switch off (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`: its node
address is 127.0.0.1, so it listens there only). A second node cannot start that way (`ray
start --address` refuses when the switch is off) and, with it on, `ray start` rewrites
127.0.0.1 to the machine's network address, where the head does not listen: the second node
therefore starts through `ray_loopback_node.py`, `ray start` with that rewrite disabled. It then
takes its node address from the route to the head: 127.0.0.1, so it listens there only too."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
RAY = Path(sys.executable).parent / "ray"


def _free_ports(n: int) -> list[int]:
    sockets = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _node_ports() -> list[str]:
    """Every port Ray would otherwise take at a fixed default (two nodes on one machine, and
    other Ray instances on it, would collide)."""
    agent, agent_grpc, metrics, runtime_env = _free_ports(4)
    return [
        f"--dashboard-agent-listen-port={agent}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--metrics-export-port={metrics}",
        f"--runtime-env-agent-port={runtime_env}",
    ]


@dataclass
class LoopbackCluster:
    address: str
    temp_dir: Path

    def processes(self) -> list[psutil.Process]:
        """The cluster's processes: those naming its temporary directory, and their children
        (the Ray workers, which rename themselves)."""
        found: dict[int, psutil.Process] = {}
        for proc in psutil.process_iter(["cmdline"]):
            if str(self.temp_dir) in " ".join(proc.info["cmdline"] or []):
                found[proc.pid] = proc
                with contextlib.suppress(psutil.Error):
                    for child in proc.children(recursive=True):
                        found[child.pid] = child
        return list(found.values())

    def raylets(self) -> list[psutil.Process]:
        found = []
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):  # a worker may end while we look
                cmdline = proc.cmdline()  # empty for a process already gone (a zombie)
                if cmdline and cmdline[0].endswith("/raylet"):
                    found.append(proc)
        return found

    def stop(self) -> None:
        procs = self.processes()
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        _, alive = psutil.wait_procs(procs, timeout=10)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()


def _start(command: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} failed:\n{done.stdout}\n{done.stderr}")


@contextlib.contextmanager
def loopback_cluster(cpus_per_node: int = 1) -> Iterator[LoopbackCluster]:
    # Short: Ray's unix socket paths live under it (at most 107 characters).
    temp_dir = Path(tempfile.mkdtemp(prefix="jcray-", dir="/tmp"))
    port, dashboard, client = _free_ports(3)
    cluster = LoopbackCluster(f"127.0.0.1:{port}", temp_dir)
    common = [f"--num-cpus={cpus_per_node}", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    try:
        _start(
            [str(RAY), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
             "--include-dashboard=false", f"--dashboard-port={dashboard}",
             f"--ray-client-server-port={client}", *common, *_node_ports()],
            {**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
        )  # fmt: skip
        _start(
            [sys.executable, str(HERE / "ray_loopback_node.py"), "start",
             f"--address={cluster.address}", *common, *_node_ports()],
            env,
        )  # fmt: skip
        # `ray start` can return before the second node's raylet shows in the process table:
        # the cluster is ready when both are there.
        deadline = time.monotonic() + 60
        while len(cluster.raylets()) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster has {len(cluster.raylets())} raylet(s), not 2")
            time.sleep(0.5)
        yield cluster
    finally:
        cluster.stop()
        subprocess.run(["rm", "-rf", str(temp_dir)], check=False)


def listening(procs: list[psutil.Process]) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every listening TCP socket of `procs`."""
    out = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            for conn in proc.net_connections("tcp"):
                if conn.status == psutil.CONN_LISTEN:
                    out.append((proc.name(), conn.laddr.ip, conn.laddr.port))
    return out


def is_loopback(address: str) -> bool:
    return address.removeprefix("::ffff:").startswith("127.") or address == "::1"
