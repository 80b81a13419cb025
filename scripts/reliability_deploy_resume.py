"""A deployed coordinator SIGKILLed at a random round and resumed with `link run --resume`.

The deployment of `scripts/reliability_deploy.py` (3 SuperNodes of the shipped SBA sample,
`node start`, TLS and node authentication), a `dp-record` run with checkpoints, and when the
drawn round k (2..R-1) starts:

- `--kill coordinator` (default): the ServerApp process (`flwr-serverapp`, started by the
  SuperLink's SuperExec) is SIGKILLed; the SuperLink and the nodes stay up.
- `--kill host`: the whole coordinator host: the SuperLink's process group (SuperLink,
  SuperExec, ServerApp) is SIGKILLed and `flower-superlink` started again with the same kit
  and state directory; the nodes reconnect by themselves.

Then `jointcredit link run --kit KIT --resume RUN_DIR` (the CLI, as an operator would run
it) and the checks: the killed run is over at the SuperLink (stopped by the resume, or
failed by the restarted SuperLink), metrics.json's rounds[] covers 1..R once each, the final
manifest lists the resume from round k-1 (the checkpoint the kill left), `jointcredit verify`
passes on the model, and no institution's DP ledger (in its node's state directory) is above
epsilon by an accountant independent of the institutions' (dp-accounting). Prints one JSON
line:

    python scripts/reliability_deploy_resume.py [--rounds 4] [--kill coordinator|host]
        [--seed S] [--out runs/reliability-deploy-resume]  (logs in OUT/KILL/)

docs/RELIABILITY.md ("Coordinator crash and resume") has the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
from reliability_deploy import LENDERS, ROOT, SCHEMA, Deployment
from reliability_resume import reference_epsilon

from jointcredit.deploy import link, processes
from jointcredit.federation.checkpoints import latest_checkpoint, signed_run_id
from jointcredit.server.resume import STATE_JSON

EPSILON = 2.0
CONNECTION = "jointcredit"  # `link run`'s connection name in FLWR_HOME


def run_settings(rounds: int) -> list[str]:
    """`link run --run-config` of the killed run: a small DP run with checkpoints."""
    return [
        f"rounds={rounds}", "model='logreg'", "privacy='dp-record'", f"epsilon={EPSILON}",
        "checkpoints=true", "finetune-epochs=0", "round-timeout=120.0",
        f"schema='{SCHEMA}'",
    ]  # fmt: skip


def link_run(dep: Deployment, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "jointcredit.cli", "link", "run", "--kit",
        str(dep.kits.coordinator), "--app", str(ROOT), "--flwr-home", str(dep.flwr_home),
        "--timeout", "900", *args,
    ]  # fmt: skip


WORKER = "jointcredit.deploy.serverapp_worker"


def _is_serverapp(proc: psutil.Process) -> bool:
    """A run's ServerApp: Flower's `flwr-serverapp` process, or a fork of the ServerApp
    worker (`link start`), whose parent is that worker."""
    command = proc.cmdline()
    if any("flwr-serverapp" in part for part in command):
        return True
    parent = proc.parent()
    return WORKER in command and parent is not None and WORKER in parent.cmdline()


def serverapps(superlink_pid: int) -> list[psutil.Process]:
    """The ServerApp processes below this deployment's SuperLink (`link start`'s process or
    Flower's SuperExec's): only ours, never another deployment's on the same machine."""
    try:
        below = psutil.Process(superlink_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for proc in below:
        try:
            if _is_serverapp(proc):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def gone(proc: psutil.Process, timeout: float = 30) -> None:
    """Wait until `proc` (not our child: its parent reaps it) is dead or a zombie."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{proc.pid} still running {timeout:.0f} s after SIGKILL")


def ledgers(dep: Deployment) -> dict[str, list[list[float]]]:
    """Each institution's RDP history, read from its own node's state directory."""
    found: dict[str, list[list[float]]] = {}
    for inst in LENDERS:
        # Its durable state is STATE/<lineage>/<institution>.json (client/durable.py); the
        # state directory also holds other files, such as the vertical session host's.
        for path in (dep.kits.kit(inst) / "state").glob(f"*/{inst}.json"):
            state = json.loads(path.read_text())["state"]
            if state.get("record_dp"):
                found[state["institution"]] = json.loads(state["record_dp"]["history"])
    return found


def read_manifest(directory: Path) -> dict[str, Any]:
    """A checkpoint's manifest (the resume verified it; here only its run id is read)."""
    return dict(json.loads((directory / "manifest.json").read_text()))


def run_log(flwr_home: Path) -> str:
    logs = sorted(flwr_home.glob("run-*.log"), key=lambda p: p.stat().st_mtime)
    return logs[-1].read_text(errors="replace") if logs else ""


def kill_at_round(dep: Deployment, run: subprocess.Popen[bytes], k: int, host: bool) -> float:
    """Wait until the run's log starts round k, then SIGKILL the coordinator (the ServerApp,
    or with `host` the SuperLink's whole process group); seconds into the run."""
    started = time.monotonic()
    while True:
        if run.poll() is not None:
            raise RuntimeError(f"link run ended ({run.returncode}) before round {k}")
        if time.monotonic() - started > 600:
            raise TimeoutError(f"round {k} not reached in 600 s")
        begun = [processes.round_started(line) for line in run_log(dep.flwr_home).splitlines()]
        if any(b is not None and b[0] == k for b in begun):
            break
        time.sleep(0.2)
    superlink = dep.procs["superlink"]
    found = serverapps(superlink.pid)
    if len(found) != 1:
        raise RuntimeError(f"expected one ServerApp below the SuperLink, found {found}")
    if host:
        os.killpg(superlink.pid, signal.SIGKILL)
        superlink.wait(timeout=30)
    else:
        found[0].send_signal(signal.SIGKILL)
        gone(found[0])
    seconds = time.monotonic() - started
    # The operator's `link run` lost its run: ended here rather than left to time out.
    os.killpg(run.pid, signal.SIGKILL)
    run.wait(timeout=30)
    return seconds


def restart_superlink(dep: Deployment) -> None:
    dep.start(
        "superlink",
        link.link_start_command(dep.kits.coordinator, dep.out / "state"),
        "superlink-restarted",
    )
    processes.wait_listening(dep.port)
    dep.wait_for("superlink-restarted", "ServerApp worker ready")


def trial(out: Path, rng: random.Random, rounds: int = 4, host: bool = False) -> dict[str, Any]:
    """One kill and resume; the figures (and what the checks need) as a dict."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    k = rng.randint(2, rounds - 1)
    run_dir = out / "run"
    dep = Deployment(out, "node-start")
    row: dict[str, Any] = {"kill": "host" if host else "coordinator", "rounds": rounds,
                           "killed_in_round": k}  # fmt: skip
    try:
        dep.up()
        with (out / "link-run.log").open("wb") as log:
            settings = " ".join(run_settings(rounds))
            first = subprocess.Popen(
                link_run(dep, "--out", str(run_dir), "--run-config", settings),
                stdout=log, stderr=subprocess.STDOUT, env=dep.env, start_new_session=True,
            )  # fmt: skip
        row["killed_at_second"] = round(kill_at_round(dep, first, k, host), 1)
        left = latest_checkpoint(run_dir)
        row["checkpoint_left"] = left.name if left is not None else None
        # The rounds the kill left signed: the resumed run must carry them over unchanged.
        carried = [] if left is None else json.loads((left / STATE_JSON).read_text())["rounds"]
        killed_run = None if left is None else signed_run_id(read_manifest(left))
        before = set(dep.flwr_home.glob("run-*.log"))
        if host:
            restart_superlink(dep)
        started = time.monotonic()
        resumed = subprocess.run(
            link_run(dep, "--resume", str(run_dir)), env=dep.env, capture_output=True, text=True
        )
        row["resume_seconds"] = round(time.monotonic() - started, 1)
        row["resume_exit"] = resumed.returncode
        if killed_run is not None:  # `link run --resume` stops the run it supersedes
            row["killed_run_status"] = processes.run_status(dep.flwr_home, CONNECTION, killed_run)
        logs = set(dep.flwr_home.glob("run-*.log")) - before
        row["resumed_run_started_rounds"] = [
            b[0]
            for log_path in logs
            for line in log_path.read_text(errors="replace").splitlines()
            if (b := processes.round_started(line)) is not None
        ]
        if resumed.returncode != 0:
            row["resume_output"] = (resumed.stdout + resumed.stderr)[-3000:]
            row["run_log"] = run_log(dep.flwr_home)[-3000:]
            return row
    finally:
        dep.down()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    seen = [r["round"] for r in metrics["rounds"]]
    manifest = json.loads((run_dir / "model" / "manifest.json").read_text())
    verify = subprocess.run(
        [sys.executable, "-m", "jointcredit.cli", "verify", str(run_dir / "model"),
         "--trust", str(dep.kits.coordinator / "trust.json")],
        capture_output=True, text=True,
    )  # fmt: skip
    delta = metrics["privacy"]["delta"]
    spent = {i: reference_epsilon(h, delta) for i, h in ledgers(dep).items()}
    row |= {
        "rounds_seen": seen,
        "rounds_lost": len(set(range(1, rounds + 1)) - set(seen)),
        "rounds_repeated": len(seen) - len(set(seen)),
        "carried_rounds_unchanged": metrics["rounds"][: len(carried)] == carried,
        "resumes_in_manifest": [r["from_round"] for r in manifest.get("resumes", [])],
        "model_verifies": verify.returncode == 0,
        "ledgers": len(spent),
        "max_epsilon_after_resume": round(max(spent.values()), 4) if spent else None,
        "epsilon": EPSILON,
        "sent_steps": metrics["privacy"]["record_dp"]["steps"],
        "ledger_steps": {i: sum(int(s) for _, _, s in h) for i, h in ledgers(dep).items()},
        "auc": metrics["federated"]["auc"],
    }
    return row


def held(row: dict[str, Any]) -> bool:
    k, host = row["killed_in_round"], row["kill"] == "host"
    return bool(
        row.get("resume_exit") == 0
        and row["checkpoint_left"] == f"round-{k - 1:03d}"
        and row["rounds_seen"] == list(range(1, row["rounds"] + 1))
        and row["resumed_run_started_rounds"] == list(range(k, row["rounds"] + 1))
        and row["carried_rounds_unchanged"]
        and row.get("killed_run_status") == ("finished:failed" if host else "finished:stopped")
        and row["resumes_in_manifest"] == [k - 1]
        and row["model_verifies"]
        and row["ledgers"] == len(LENDERS)
        and row["max_epsilon_after_resume"] <= EPSILON + 1e-6
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "reliability-deploy-resume")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--kill", choices=["coordinator", "host"], default="coordinator")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    out = args.out / args.kill  # each scenario's processes' logs kept apart
    row = trial(out, random.Random(seed), args.rounds, host=args.kill == "host")
    row["seed"] = seed
    print(json.dumps(row))
    if row.get("resume_exit") != 0 or not held(row):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
