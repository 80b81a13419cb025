"""Coordinator crash and resume: SIGKILL `jointcredit simulate` at a random round, resume it
with `simulate --resume`, and check what docs/RELIABILITY.md reports: no round lost or
repeated, the model verifies, it equals the uninterrupted run's where the institutions' state
survived, and no institution's DP ledger ever passes epsilon (checked with dp-accounting, an
accountant independent of the institutions' Opacus one).

    python scripts/reliability_resume.py [--trials 1] [--seed S] [--out runs/reliability-resume]

The kill comes as soon as the checkpoint of the drawn round exists: the coordinator is then
already in the next round, with the institutions training (under DP their ledgers for it
written ahead).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dp_accounting

COMMON = [
    "--dataset", "synthetic", "--institutions", "3", "--synthetic-rows", "600",
    "--model", "logreg", "--finetune-epochs", "0", "--no-baselines", "--no-audit",
    "--resumable",
]  # fmt: skip
SCENARIOS: dict[str, list[str]] = {
    "fedavgm": ["--strategy", "fedavgm", "--rounds", "5"],
    "scaffold": ["--strategy", "scaffold", "--rounds", "5"],
    "dp-record": ["--privacy", "dp-record", "--epsilon", "2", "--rounds", "5"],
}
EPSILON = 2.0


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "jointcredit.cli", "simulate", *args]


def ledger_written_ahead(staging: Path, server_round: int) -> bool:
    """Some institution has recorded its steps of `server_round` (DP: before training)."""
    for path in (staging / "institutions").rglob("*.json"):
        try:
            if json.loads(path.read_text())["state"]["round"] >= server_round:
                return True
        except (ValueError, KeyError, OSError):
            continue
    return False


def kill_at(
    out: Path, server_round: int, args: list[str], mid_round: bool = False, timeout: float = 900
) -> float:
    """Start a run, SIGKILL it once its checkpoint of `server_round` exists (`mid_round`: and
    an institution has written its DP ledger for the next round); seconds taken."""
    started = time.monotonic()
    with open(out.parent / f"{out.name}.killed.log", "w") as log:
        proc = subprocess.Popen(cli(*args, "--out", str(out)), stdout=log, stderr=log)
        pattern = f".{out.name}.partial-*/checkpoints/round-{server_round:03d}"
        while proc.poll() is None:
            found = list(out.parent.glob(pattern))
            if found and (
                not mid_round or ledger_written_ahead(found[0].parents[1], server_round + 1)
            ):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                proc.kill()
                raise TimeoutError(f"{out}: round {server_round} not reached in {timeout} s")
            time.sleep(0.1)
    raise RuntimeError(f"{out}: the run ended ({proc.returncode}) before round {server_round}")


def reference_epsilon(history: list[list[float]], delta: float) -> float:
    accountant = dp_accounting.rdp.RdpAccountant()
    for noise, rate, steps in history:
        event = dp_accounting.PoissonSampledDpEvent(rate, dp_accounting.GaussianDpEvent(noise))
        accountant.compose(dp_accounting.SelfComposedDpEvent(event, int(steps)))
    return float(accountant.get_epsilon(delta))


def ledgers(out: Path) -> dict[str, list[list[float]]]:
    found = {}
    for path in (out / "institutions").rglob("*.json"):
        state = json.loads(path.read_text())["state"]
        found[state["institution"]] = json.loads(state["record_dp"]["history"])
    return found


def trial(name: str, root: Path, rng: random.Random, with_whole: bool = True) -> dict[str, Any]:
    args = [*COMMON, *SCENARIOS[name]]
    rounds = int(args[args.index("--rounds") + 1])
    killed_after = rng.randint(1, rounds - 1)
    out = root / name
    for stale in [out, *root.glob(f".{name}.partial-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    kill_seconds = kill_at(out, killed_after, args, mid_round=name == "dp-record")
    time.sleep(2)  # the watchdog stops the killed run's Ray processes
    started = time.monotonic()
    resumed = subprocess.run(
        cli("--resume", str(out), "--no-baselines", "--no-audit"), capture_output=True, text=True
    )
    if resumed.returncode != 0:
        raise RuntimeError(f"{name}: resume failed: {resumed.stderr[-3000:]}")
    resume_seconds = time.monotonic() - started
    metrics = json.loads((out / "metrics.json").read_text())
    seen = [r["round"] for r in metrics["rounds"]]
    verify = subprocess.run(
        [sys.executable, "-m", "jointcredit.cli", "verify", str(out / "model"),
         "--trust", str(out / "trust.json")],
        capture_output=True, text=True,
    )  # fmt: skip
    manifest = json.loads((out / "model" / "manifest.json").read_text())
    row: dict[str, Any] = {
        "scenario": name,
        "rounds": rounds,
        "killed_after_round": killed_after,
        "rounds_lost": len(set(range(1, rounds + 1)) - set(seen)),
        "rounds_repeated": len(seen) - len(set(seen)),
        "model_verifies": verify.returncode == 0,
        "resumes_in_manifest": manifest.get("resumes", []),
        "killed_run_seconds": round(kill_seconds, 1),
        "resume_seconds": round(resume_seconds, 1),
    }
    if name == "dp-record":
        delta = metrics["privacy"]["delta"]
        spent = {i: reference_epsilon(h, delta) for i, h in ledgers(out).items()}
        row["ledgers"] = len(spent)
        row["max_epsilon_after_resume"] = round(max(spent.values()), 4)
        # Ledger steps above the steps of the updates sent: the round the kill interrupted,
        # recorded ahead and then redone, counts twice.
        row["ledger_steps"] = {i: sum(int(k) for _, _, k in h) for i, h in ledgers(out).items()}
        row["sent_steps"] = metrics["privacy"]["record_dp"]["steps"]
        row["epsilon"] = EPSILON
    elif with_whole:
        whole = root / f"{name}-whole"
        shutil.rmtree(whole, ignore_errors=True)
        subprocess.run(cli(*args, "--out", str(whole)), check=True, capture_output=True)
        same = (whole / "model" / "weights.npz").read_bytes() == (
            out / "model" / "weights.npz"
        ).read_bytes()
        row["equals_uninterrupted"] = same
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("runs/reliability-resume"))
    parser.add_argument("--scenarios", nargs="*", default=list(SCENARIOS))
    opts = parser.parse_args()
    seed = opts.seed if opts.seed is not None else random.SystemRandom().randrange(2**31)
    rng = random.Random(seed)
    opts.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for _ in range(opts.trials):
        for name in opts.scenarios:
            row = trial(name, opts.out, rng)
            print(json.dumps(row), flush=True)
            rows.append(row)
    (opts.out / "results.json").write_text(json.dumps({"seed": seed, "trials": rows}, indent=1))
    bad = [
        r
        for r in rows
        if r["rounds_lost"]
        or r["rounds_repeated"]
        or not r["model_verifies"]
        or r.get("equals_uninterrupted") is False
        or r.get("max_epsilon_after_resume", 0) > EPSILON + 1e-6
    ]
    print(f"seed {seed}: {len(rows) - len(bad)} of {len(rows)} trials held")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
