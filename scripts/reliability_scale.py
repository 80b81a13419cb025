"""How `jointcredit simulate` grows with the number of institutions on one machine.

    nice -n 5 .venv/bin/python scripts/reliability_scale.py [--out runs/scale]
        [--cell INSTITUTIONS:ROUNDS:FRACTION:ROWS ...] [--ray-cpus N]

Each cell is one `jointcredit simulate` process on synthetic institutions (logistic
scorecard, no baselines, no audit, no checkpoints, no personalisation unless
--finetune-epochs), so each starts its own Ray. Wall seconds
are the process's; CPU seconds the user + system time of the process and everything it
started (less sensitive than wall time to other work on a shared machine); peak memory the
highest sum, sampled every second, of the proportional set size (PSS: shared pages split
between the processes sharing them) of the process and everything it started (the Ray
workers, raylet, GCS). The table goes to OUT/scale.md and stdout, every figure to
OUT/scale.json; docs/RELIABILITY.md quotes them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from jointcredit.simulations.engine import FLOWER_DELIVERY_ENV

ROOT = Path(__file__).resolve().parents[1]
JOINTCREDIT = Path(sys.executable).parent / "jointcredit"
DEFAULT_CELLS = (
    "20:5:1.0:3000",
    "100:5:1.0:3000",
    "200:5:1.0:3000",
    "200:5:0.1:3000",
    "500:5:0.1:1000",
    "1000:5:0.1:500",
)


@dataclass
class Cell:
    institutions: int
    rounds: int
    fraction: float
    rows: int

    @classmethod
    def parse(cls, text: str) -> Cell:
        n, rounds, fraction, rows = text.split(":")
        return cls(int(n), int(rounds), float(fraction), int(rows))


@dataclass
class Result:
    cell: Cell
    wall_seconds: float
    cpu_seconds: float
    peak_gib: float
    setup_seconds: float
    round_seconds: list[float]
    personalization_seconds: float
    verification_seconds: float
    signing_seconds: float
    replies: int
    status: str

    @property
    def per_institution_round(self) -> float:
        return self.wall_seconds / (self.cell.institutions * self.cell.rounds)

    @property
    def cpu_per_institution_round(self) -> float:
        return self.cpu_seconds / (self.cell.institutions * self.cell.rounds)


def _tree(root: psutil.Process) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return [root, *root.children(recursive=True)]
    return []


def _tree_pss(procs: list[psutil.Process]) -> int:
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_full_info().pss
    return total


def _record_cpu(procs: list[psutil.Process], cpu: dict[tuple[int, float], float]) -> None:
    """Each process's user + system seconds so far (the last sample before it ends counts)."""
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            cpu[(proc.pid, proc.create_time())] = times.user + times.system


def run_cell(
    cell: Cell,
    out: Path,
    ray_cpus: int,
    finetune_epochs: int,
    flower_delivery: bool,
    ray_address: str = "",
) -> Result:
    run_out = out / (
        f"n{cell.institutions}-r{cell.rounds}-f{cell.fraction:g}-rows{cell.rows}"
        + ("-flower" if flower_delivery else "")
    )
    command = [
        str(JOINTCREDIT),
        "simulate",
        "--dataset=synthetic",
        f"--institutions={cell.institutions}",
        f"--synthetic-rows={cell.rows}",
        f"--rounds={cell.rounds}",
        f"--fraction-train={cell.fraction:g}",
        "--model=logreg",
        "--no-checkpoints",
        "--no-baselines",
        "--no-audit",
        f"--finetune-epochs={finetune_epochs}",
        f"--ray-cpus={ray_cpus}",
        *([f"--ray-address={ray_address}"] if ray_address else []),
        f"--out={run_out}",
        "--force",
    ]
    started = time.monotonic()
    env = {**os.environ, FLOWER_DELIVERY_ENV: "1" if flower_delivery else "0"}
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    peak = 0
    cpu: dict[tuple[int, float], float] = {}
    stop = threading.Event()
    watched = psutil.Process(proc.pid)

    def sample() -> None:
        nonlocal peak
        while not stop.wait(1.0):
            procs = _tree(watched)
            _record_cpu(procs, cpu)
            peak = max(peak, _tree_pss(procs))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = proc.communicate()
    wall = time.monotonic() - started
    stop.set()
    sampler.join()
    (out / f"{run_out.name}.log").write_bytes(output)
    status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
    timing: dict[str, object] = {}
    security: dict[str, object] = {}
    if proc.returncode == 0:
        metrics = json.loads((run_out / "metrics.json").read_text())
        timing, security = metrics["timing"], metrics["security"]
    return Result(
        cell=cell,
        wall_seconds=round(wall, 1),
        cpu_seconds=round(sum(cpu.values()), 1),
        peak_gib=round(peak / 2**30, 2),
        setup_seconds=float(timing.get("setup_seconds", 0.0)),  # type: ignore[arg-type]
        round_seconds=list(timing.get("round_seconds", [])),  # type: ignore[call-overload]
        personalization_seconds=float(timing.get("personalization_seconds", 0.0)),  # type: ignore[arg-type]
        verification_seconds=float(security.get("verification_seconds", 0.0)),  # type: ignore[arg-type]
        signing_seconds=float(security.get("signing_seconds", 0.0)),  # type: ignore[arg-type]
        replies=int(security.get("verified_replies", 0)),  # type: ignore[call-overload]
        status=status,
    )


def table(results: list[Result]) -> str:
    lines = [
        "| institutions | rounds | fraction | rows/inst | wall s | s per institution-round "
        "| CPU s | CPU s per institution-round | setup s | mean round s | final round s "
        "| peak GiB | status |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        c = r.cell
        mean_round = sum(r.round_seconds) / len(r.round_seconds) if r.round_seconds else 0.0
        lines.append(
            f"| {c.institutions} | {c.rounds} | {c.fraction:g} | {c.rows} | "
            f"{r.wall_seconds:.0f} | {r.per_institution_round:.3f} | {r.cpu_seconds:.0f} | "
            f"{r.cpu_per_institution_round:.3f} | {r.setup_seconds:.0f} | "
            f"{mean_round:.1f} | {r.personalization_seconds:.0f} | {r.peak_gib:.2f} | "
            f"{r.status} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "scale")
    parser.add_argument("--cell", action="append", help="INSTITUTIONS:ROUNDS:FRACTION:ROWS")
    parser.add_argument("--ray-cpus", type=int, default=0, help="as `simulate --ray-cpus`")
    parser.add_argument(
        "--ray-address",
        default="",
        help="as `simulate --ray-address` (CPU and memory then count this machine's driver only)",
    )
    parser.add_argument(
        "--flower-delivery",
        action="store_true",
        help="Flower's own message delivery loop (simulations/engine.py), for comparison",
    )
    parser.add_argument(
        "--finetune-epochs", type=int, default=0, help="the final round's (0: no personalisation)"
    )
    args = parser.parse_args()
    args.out = args.out.resolve()  # the runs start in the repository root
    args.out.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    for text in args.cell or DEFAULT_CELLS:
        result = run_cell(
            Cell.parse(text),
            args.out,
            args.ray_cpus,
            args.finetune_epochs,
            args.flower_delivery,
            args.ray_address,
        )
        results.append(result)
        print(table(results[-1:]).splitlines()[-1], flush=True)
        (args.out / "scale.json").write_text(
            json.dumps(
                [
                    {**asdict(r), "s_per_institution_round": r.per_institution_round}
                    for r in results
                ],
                indent=2,
            )
        )
    text = table(results)
    (args.out / "scale.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
