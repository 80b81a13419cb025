"""The docs/BENCHMARKS.md section on vertical joint credit (issue 22): ECDH-PSI at 1M x 1M, the
vertical trees' time against XGBoost on the joined rows with their lossless equality and the
platform's gain, whole vertical runs over Flower, and single vertical decisions over HTTP.
Each part is a measured subprocess of its own script, so its figures are what that command
prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
Measure = Callable[[list[str]], tuple[float, int, subprocess.CompletedProcess[str]]]
VERTICAL = "vertical joint credit: PSI 1M x 1M, 30 vertical trees against XGBoost, decisions"
PSI_GOAL_SECONDS = 240
TREES_GOAL_RATIO = 60
DECISION_GOAL_P99_MS = 50


def _json(measure: Measure, cmd: list[str]) -> tuple[dict[str, Any], float, int]:
    """Run `cmd` measured; its JSON result (the stdout from the first line opening an object:
    HEU may log a line before it)."""
    print(f"running: {' '.join(cmd[1:])}", flush=True)
    wall, peak, proc = measure(cmd)
    if proc.returncode != 0:
        raise SystemExit(f"{VERTICAL}: {' '.join(cmd[1:])} failed:\n{proc.stderr[-4000:]}")
    lines = proc.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("{"))
    result: dict[str, Any] = json.loads("\n".join(lines[start:]))
    return result, wall, peak


def _command(cmd: list[str]) -> str:
    return " ".join(["python", *cmd[1:]])


def _psi(measure: Measure) -> str:
    cmd = [sys.executable, "scripts/bench_psi.py", "--label", "1000000", "--feature", "1000000",
           "--json"]  # fmt: skip
    r, _wall, _peak = _json(measure, cmd)
    peak = sum(r["peak_bytes"]) / 2**20
    met = "met" if r["wall_seconds"] < PSI_GOAL_SECONDS and peak < 2048 else "NOT met"
    return (
        f"**PSI** (`{_command(cmd)}`; both parties on this machine, each a process):\n\n"
        "| label x feature | shared | wall s | X25519 ops/s | CPU s (label, feature) | "
        "peak RSS both MiB | load at start | goal (< 240 s, < 2 GiB) |\n"
        "|---|---:|---:|---:|---:|---:|---:|---|\n"
        f"| {r['label']:,} x {r['feature']:,} | {r['overlap']:,} | {r['wall_seconds']:.1f} | "
        f"{r['ops_per_second']:,.0f} | {r['cpu_seconds'][0]:.0f}, {r['cpu_seconds'][1]:.0f} | "
        f"{peak:.0f} | {r['load_start']:.1f} | {met} |\n"
    )


def _trees(measure: Measure) -> str:
    rows = []
    for dataset in ("synthetic", "sba-vertical"):
        cmd = [sys.executable, "scripts/bench_vertical_trees.py", "--dataset", dataset]
        r, _wall, _peak = _json(measure, cmd)
        ratio = r["ratio_to_xgboost"]
        rows.append(
            f"| {dataset} | {r['rows']:,} x ({r['features'][0]} + {r['features'][1]}) | "
            f"{r['xgboost_seconds']:.3f} | {r['vertical_seconds']:.1f} | "
            f"{r['vertical_cpu_seconds']:.1f} | {r['phase_seconds']['encrypt']:.1f} | "
            f"**{ratio:.0f}x** ({'met' if ratio <= TREES_GOAL_RATIO else 'NOT met'}) | "
            f"{r['federated_auc']:.4f} = {r['centralized_auc']:.4f} | "
            f"{r['max_abs_pd_difference_vs_central']:.1e} | {r['label_party_only_auc']:.4f} | "
            f"**{r['auc_gain']:+.4f}** | {r['load_start']:.1f} |"
        )
    return (
        "**Vertical trees** (`python scripts/bench_vertical_trees.py [--dataset sba-vertical]`: "
        "30 trees of depth 3, 32 bins, OU through HEU, both parties in one process, against "
        "XGBoost on the joined rows, the faster of 1 and 2 threads, best of 3; goal 60x):\n\n"
        "| data | train rows x (bank + platform) features | XGBoost s | vertical s | "
        "vertical CPU s | of it encryption s | x XGBoost | AUC federated = centralized | "
        "largest PD difference to the central engine | bank alone AUC | the platform's gain | "
        "load at start |\n"
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n"
    )


def _runs(measure: Measure) -> str:
    rows = []
    for dataset in ("sba-vertical", "synthetic-vertical"):
        out = ROOT / "runs" / f"bench-vertical-{dataset}"
        cmd = [sys.executable, "-m", "jointcredit.cli", "simulate", "--layout", "vertical",
               "--dataset", dataset, "--out", str(out), "--force"]  # fmt: skip
        print(f"running: {' '.join(cmd[2:])}", flush=True)
        wall, peak, proc = measure(cmd)
        if proc.returncode != 0:
            raise SystemExit(f"{VERTICAL}: {dataset} failed:\n{proc.stderr[-4000:]}")
        m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        v = m["vertical"]
        rows.append(
            f"| `jointcredit simulate --layout vertical --dataset {dataset} --out OUT` | "
            f"{v['intersection_size']:,} | {v['psi_seconds']:.1f} | "
            f"{v['training_seconds']:.1f} | {wall:.1f} | {peak / 2**30:.2f} | "
            f"{m['federated']['auc']:.4f} | {m['centralized']['auc']:.4f} | "
            f"{m['label_party_only']['auc']:.4f} | {v['bytes_sent'] / 2**20:.0f} |"
        )
    return (
        "**Whole runs over Flower** (PSI and 30 trees through the relaying coordinator, every "
        "reply verified, each party's part signed; the OUT contract):\n\n"
        "| command | aligned | PSI s | training s | wall s | peak GiB | AUC federated | "
        "centralized | bank alone | MiB through the coordinator |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n"
    )


def _decisions(measure: Measure) -> str:
    cmd = [sys.executable, "scripts/bench_vertical_service.py", "--decisions", "2000",
           "--trees", "30", "--rows", "2000", "--json"]  # fmt: skip
    r, _wall, _peak = _json(measure, cmd)
    met = "met" if r["p99_ms"] < DECISION_GOAL_P99_MS else "NOT met"
    return (
        f"**Vertical decisions** (`{_command(cmd)}`: `jointcredit serve --vertical-kit` and "
        "`jointcredit vertical serve` as two processes over loopback TLS, one client, "
        f"{r['trees']} trees, {r['platform_splits']} splits the platform's; every decision "
        f"with reasons: {r['all_with_reasons']}):\n\n"
        "| p50 ms | p99 ms | max ms | the platform's round p50 / p99 ms | load before, after | "
        "goal (p99 < 50 ms) |\n"
        "|---:|---:|---:|---|---|---|\n"
        f"| {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} | "
        f"{r['round_p50_ms']:.1f} / {r['round_p99_ms']:.1f} | "
        f"{r['load'][0]:.1f}, {r['load'][1]:.1f} | {met} |\n"
    )


def vertical_section(measure: Measure) -> str:
    started = datetime.now(UTC)
    load = os.getloadavg()[0]
    parts = [_psi(measure), _trees(measure), _runs(measure), _decisions(measure)]
    return (
        f"### {VERTICAL}\n\n"
        f"Measured {started:%Y-%m-%d %H:%M} UTC, 1-minute load {load:.1f} at the start (the "
        "figures move with the machine's load; the hand-written vertical "
        "sections below say what each costs and why). Goals from issue 22.\n\n" + "\n".join(parts)
    )
