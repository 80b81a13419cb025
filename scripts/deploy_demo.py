"""A whole deployment on this machine, as separate processes: provision kits, start a SuperLink
and one SuperNode per institution (TLS + node authentication, each node with its own data
file from the shipped SBA sample), register the nodes, train with `jointcredit link run`'s
machinery, verify the signed model, stop everything. Prints a JSON summary.

    python scripts/deploy_demo.py --out runs/deploy-demo [--rounds 3] [--institutions 3]
        [--model logreg|mlp|scorecard]

Used by `make bench` for the deployment numbers (wall time and memory of the process tree).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from jointcredit.deploy import kits, link, node, processes
from jointcredit.federation.metrics import RunMetrics
from jointcredit.trust.keyset import TRUST_FILE

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sba_sample"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "deploy-demo")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--institutions", type=int, default=3)
    ap.add_argument("--model", choices=["logreg", "mlp", "scorecard"], default="logreg")
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    lenders = sorted(p.stem for p in SAMPLE.glob("*.parquet"))[: args.institutions]
    ids = [f"inst-{i}" for i in range(len(lenders))]
    port = processes.free_port()
    started = time.monotonic()
    fed = kits.provision("demo", ids, f"127.0.0.1:{port}", args.out / "kits")
    flwr_home = args.out / "flwr-home"
    env = processes.flower_env(flwr_home)
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, cmd: list[str]) -> None:
        log = (args.out / f"{name}.log").open("wb")
        procs.append(
            subprocess.Popen(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        )

    summary: dict[str, object] = {}
    try:
        start(
            "superlink",
            link.link_start_command(fed.coordinator, args.out / "state", "127.0.0.1"),
        )
        processes.wait_listening(port)
        processes.write_connection(fed.coordinator, flwr_home, "demo")
        processes.register_nodes(fed.coordinator, flwr_home, "demo")
        for inst, lender in zip(ids, lenders, strict=True):
            start(
                inst,
                node.node_start_command(
                    fed.kit(inst),
                    SAMPLE / f"{lender}.parquet",
                    schema=SAMPLE / "schema.toml",
                    port=processes.free_port(),
                ),
            )
        setup = time.monotonic() - started
        out = args.out / "run"
        config = processes.run_config(
            fed.coordinator,
            out,
            {
                "model": args.model,  # the recipe of the model applies (settings resolve it)
                "rounds": args.rounds,
                "schema": str(SAMPLE / "schema.toml"),
                "checkpoints": False,
            },
        )
        run_started = time.monotonic()
        run_id, status = processes.start_run(ROOT, flwr_home, "demo", config, timeout=1800)
        run_seconds = time.monotonic() - run_started
        summary = {"run_id": run_id, "status": status, "setup_seconds": round(setup, 1),
                   "run_seconds": round(run_seconds, 1), "institutions": len(ids),
                   "rounds": args.rounds}  # fmt: skip
        if status == "finished:completed":
            from jointcredit.models.artifact import load_artifact
            from jointcredit.trust.store import load_store

            load_artifact(out / "model", load_store(fed.coordinator / TRUST_FILE))
            metrics = RunMetrics.read(out / "metrics.json")
            summary |= {"auc": metrics.federated.auc, "verified_model": True,
                        "verified_replies": metrics.security.verified_replies}  # fmt: skip
            fresh = [r.scaffold_fresh_control for r in metrics.rounds]
            if any(f is not None for f in fresh):
                summary["scaffold_fresh_control"] = fresh
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
    print(json.dumps(summary))
    if summary.get("status") != "finished:completed":
        raise SystemExit(1)


if __name__ == "__main__":
    main()
