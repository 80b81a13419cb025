"""Deployed rounds at partner speed, and a SuperNode restarted mid-run.

A deployment on this machine as separate processes, TLS and node authentication on: three
institutions of the shipped SBA sample, each with only its own file, the shipped logistic
scorecard recipe. Prints one JSON line per scenario:

    python scripts/reliability_deploy.py [--rounds 10] [--mode node-start|per-message]
        [--restart] [--poll-interval S] [--out runs/reliability-deploy]

- `node-start` (default): nodes started by `jointcredit node start` (SuperNode + long-lived
  ClientApp worker), the SuperLink by `jointcredit link start` (SuperLink + long-lived
  ServerApp worker). `per-message`: the previous way, `flower-supernode` and
  `flower-superlink` with Flower's default subprocess isolation (a fresh `flwr-clientapp`
  process per message, a fresh `flwr-serverapp` per run) and its default 3 s idle poll - the
  figure to compare with.
- run time: from `flwr run` to the run's final status, nodes already connected (and, for
  `node-start`, their workers ready: a node serves many runs); `superlink_run_seconds`: the
  same run as the SuperLink recorded it (created to finished), without the start-ups of the
  `flwr run` / `flwr ls` commands that measure it.
- `--restart`: when round 3 starts, one node's whole process group is killed (SIGKILL, as
  a machine failing) and started again with the same kit; reports the rounds it trained in.

docs/RELIABILITY.md ("Deployed rounds at partner speed") has the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

from jointcredit.deploy import kits, link, node, processes
from jointcredit.federation.metrics import RunMetrics

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sba_sample"
SCHEMA = SAMPLE / "schema.toml"
LENDERS = {
    "bank-a": "banco-popular-north-america",
    "bank-b": "bank-of-america-natl-assoc",
    "cf-c": "bbcn-bank",
}
RESTARTED = "bank-b"
KILL_AT_ROUND = 3


def superlink_seconds(record: dict[str, object]) -> float | None:
    """The run's time as the SuperLink recorded it (created to finished): without the
    measuring side's `flwr run`/`flwr ls` process start-ups."""
    try:
        pending = datetime.fromisoformat(str(record["pending-at"]))
        finished = datetime.fromisoformat(str(record["finished-at"]))
    except (KeyError, ValueError):
        return None
    return round((finished - pending).total_seconds(), 1)


class Deployment:
    def __init__(self, out: Path, mode: str, poll: float | None = None) -> None:
        self.out, self.mode, self.poll = out, mode, poll
        self.port = processes.free_port()
        self.kits = kits.provision("rel", list(LENDERS), f"127.0.0.1:{self.port}", out / "kits")
        self.flwr_home = out / "flwr-home"
        self.env = processes.flower_env(self.flwr_home)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, cmd: list[str], log: str | None = None) -> None:
        with (self.out / f"{log or name}.log").open("wb") as fh:
            self.procs[name] = subprocess.Popen(
                cmd, env=self.env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )

    def node_command(self, inst: str) -> list[str]:
        data, port = SAMPLE / f"{LENDERS[inst]}.parquet", processes.free_port()
        if self.mode == "node-start":
            return node.node_start_command(
                self.kits.kit(inst), data, schema=SCHEMA, port=port, poll_interval=self.poll
            )
        cmd = processes.supernode_command(self.kits.kit(inst), data, schema=SCHEMA, port=port)
        flower = cmd.index("--root-certificates")
        cmd = [processes.flower_bin("flower-supernode"), *cmd[flower:]]
        cmd[cmd.index("--isolation") + 1] = "subprocess"
        return cmd

    def ready(self, log: str) -> bool:
        text = (self.out / f"{log}.log").read_text(errors="replace")
        worker = self.mode != "node-start" or "ClientApp worker ready" in text
        return "SuperNode ID" in text and worker

    def wait_for(self, log: str, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while text not in (self.out / f"{log}.log").read_text(errors="replace"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{log}: no {text!r} after {timeout:.0f} s")
            time.sleep(0.2)

    def wait_ready(self, logs: list[str], timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not all(self.ready(log) for log in logs):
            if time.monotonic() > deadline:
                raise TimeoutError(f"nodes not ready after {timeout:.0f} s: {logs}")
            time.sleep(0.5)

    def up(self) -> None:
        coordinator = self.kits.coordinator
        state = self.out / "state"
        if self.mode == "node-start":  # and `link start`: SuperLink + ServerApp worker
            self.start("superlink", link.link_start_command(coordinator, state))
        else:
            self.start("superlink", processes.superlink_command(coordinator, state))
        processes.wait_listening(self.port)
        processes.write_connection(coordinator, self.flwr_home, "rel")
        processes.register_nodes(coordinator, self.flwr_home, "rel")
        for inst in LENDERS:
            self.start(inst, self.node_command(inst))
        self.wait_ready(list(LENDERS))
        if self.mode == "node-start":
            self.wait_for("superlink", "ServerApp worker ready")

    def kill(self, name: str) -> None:
        os.killpg(self.procs[name].pid, signal.SIGKILL)
        self.procs[name].wait(timeout=30)

    def down(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def scenario(
    out: Path, mode: str, rounds: int, restart: bool, poll: float | None = None
) -> dict[str, object]:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    dep = Deployment(out, mode, poll)
    events: dict[str, float] = {}
    try:
        dep.up()
        started = time.monotonic()

        def on_line(line: str) -> None:
            now = time.monotonic() - started
            begun = processes.round_started(line)
            if begun is not None:
                events.setdefault(f"round {begun[0]}", now)
                if restart and begun[0] == KILL_AT_ROUND and "killed" not in events:
                    dep.kill(RESTARTED)
                    events["killed"] = time.monotonic() - started
                    dep.start(RESTARTED, dep.node_command(RESTARTED), f"{RESTARTED}-restarted")
                    events["restarted"] = time.monotonic() - started

        config = processes.run_config(
            dep.kits.coordinator,
            out / "run",
            {"rounds": rounds, "schema": str(SCHEMA), "checkpoints": False,
             "round-timeout": 120.0},
        )  # fmt: skip
        run_id, status = processes.start_run(
            ROOT, dep.flwr_home, "rel", config, timeout=3600, on_line=on_line
        )
        seconds = time.monotonic() - started
        record = processes.run_record(dep.flwr_home, "rel", run_id)
    finally:
        dep.down()
    result: dict[str, object] = {
        "mode": mode, "institutions": len(LENDERS), "rounds": rounds, "status": status,
        "run_seconds": round(seconds, 1), "seconds_per_round": round(seconds / rounds, 1),
        "superlink_run_seconds": superlink_seconds(record),
    }  # fmt: skip
    if status == "finished:completed":
        metrics = RunMetrics.read(out / "run" / "metrics.json")
        per_round = metrics.timing.round_seconds
        result["auc"] = metrics.federated.auc
        result["coordinator_round_seconds_mean"] = round(sum(per_round) / len(per_round), 2)
        if restart:
            trained = [r.round for r in metrics.rounds if RESTARTED in (r.train_institutions or [])]
            result |= {
                "restarted": RESTARTED,
                "killed_at_second": round(events["killed"], 1),
                "rounds_trained_by_restarted": trained,
                "rounds_without_it": [r for r in range(1, rounds + 1) if r not in trained],
            }
    result["run_id"] = run_id
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "reliability-deploy")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--mode", choices=["node-start", "per-message"], default="node-start")
    ap.add_argument("--restart", action="store_true", help="kill and restart one node")
    ap.add_argument(
        "--poll-interval", type=float, default=None, help="node start --poll-interval (0.5)"
    )
    args = ap.parse_args()
    result = scenario(args.out, args.mode, args.rounds, args.restart, args.poll_interval)
    print(json.dumps(result))
    if result["status"] != "finished:completed":
        raise SystemExit(1)


if __name__ == "__main__":
    main()
