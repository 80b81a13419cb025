"""The docs/BENCHMARKS.md section on gradient-boosted trees: the federated trees beside
XGBoost on the same rows and machine, per dataset and split (`scripts/bench_trees.py --json`
as a measured subprocess each)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
Measure = Callable[[list[str]], tuple[float, int, subprocess.CompletedProcess[str]]]
HEADER = (
    "| dataset | split | lenders | XGBoost own bins: AUC / s | XGBoost same bins: AUC / s "
    "(1 / 2 threads) | twin: AUC / s | federated AUC | federated - XGBoost own bins | "
    "federated s | ratio | peak GiB |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)
TREES = "gradient-boosted trees beside XGBoost: 100 trees of depth 6, every dataset and split"
SETS = [
    ("sba", "random"),
    ("sba", "time"),
    ("sba-full", "random"),
    ("sba-full", "time"),
    ("synthetic", "random"),
    ("synthetic", "time"),
]


def _run(measure: Measure, dataset: str, split: str) -> tuple[dict[str, Any], float, int]:
    out = ROOT / "runs" / f"bench-trees-{dataset}-{split}"
    cmd = [sys.executable, "scripts/bench_trees.py", "--dataset", dataset, "--split", split,
           "--json", "--out", str(out)]  # fmt: skip
    print(f"running: {' '.join(cmd[1:])}", flush=True)
    wall, peak, proc = measure(cmd)
    if proc.returncode != 0:
        raise SystemExit(f"{TREES} ({dataset}, {split}) failed:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result, wall, peak


# The bin-count sensitivity table: which sets, and which max-bins values (evenly spread, the
# default 64 among them; not chosen after seeing the results).
SWEEP_SETS = [("sba", "random"), ("sba", "time"), ("synthetic", "random"), ("synthetic", "time")]
SWEEP_BINS = [32, 48, 64, 80, 128, 256]


def _sweep(measure: Measure, dataset: str, split: str) -> list[dict[str, Any]]:
    cmd = [sys.executable, "scripts/bench_trees.py", "--dataset", dataset, "--split", split,
           "--bin-sweep", ",".join(map(str, SWEEP_BINS))]  # fmt: skip
    print(f"running: {' '.join(cmd[1:])}", flush=True)
    _wall, _peak, proc = measure(cmd)
    if proc.returncode != 0:
        raise SystemExit(f"{TREES} bin sweep ({dataset}, {split}) failed:\n{proc.stderr[-4000:]}")
    rows: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])["bin_sweep"]
    return rows


def sweep_section(measure: Measure) -> str:
    """Twin (= federated) minus XGBoost on its own bins, per max-bins: how much of a single
    row's gap is where the bins happen to fall."""
    head = " | ".join(str(b) for b in SWEEP_BINS)
    lines = [
        f"| dataset | split | {head} | mean | mean AUC: twin / XGBoost | AUC range over "
        "bin counts: twin / XGBoost |",
        "|---|---|" + "---:|" * (len(SWEEP_BINS) + 3),
    ]
    for dataset, split in SWEEP_SETS:
        rows = _sweep(measure, dataset, split)
        gaps = [r["twin"] - r["xgboost_own_bins"] for r in rows]
        twin = [r["twin"] for r in rows]
        xgb = [r["xgboost_own_bins"] for r in rows]
        cells = " | ".join(f"{g:+.4f}" for g in gaps)
        lines.append(
            f"| {dataset} | {split} | {cells} | {sum(gaps) / len(gaps):+.4f} | "
            f"{sum(twin) / len(twin):.4f} / {sum(xgb) / len(xgb):.4f} | "
            f"{max(twin) - min(twin):.4f} / {max(xgb) - min(xgb):.4f} |"
        )
    table = "\n".join(lines)
    return f"""
How much of a gap is where the bins fall: the twin (equal to the federated ensemble, tested)
minus XGBoost on its own bins, same 100 trees of depth 6, at each max-bins (`python
scripts/bench_trees.py --dataset D --split S --bin-sweep {",".join(map(str, SWEEP_BINS))}`;
measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC). Where a row's gap in the table above is no
larger than either learner's own range over bin counts, it says where the bins fell, not which
learner is stronger; the mean over bin counts is then the fairer comparison.

{table}
"""


def trees_section(measure: Measure) -> str:
    lines, detail = [], ""
    for dataset, split in SETS:
        r, _wall, peak = _run(measure, dataset, split)
        xgb2, xgb1, raw, twin, fed = r["rows"]
        ratio = fed["seconds"] / raw["seconds"]
        gap = fed["auc"] - raw["auc"]
        lines.append(
            f"| {dataset} | {split} | {r['institutions']} | {raw['auc']:.4f} / "
            f"{raw['seconds']:.2f} | {xgb1['auc']:.4f} / {xgb1['seconds']:.2f} / "
            f"{xgb2['seconds']:.2f} | {twin['auc']:.4f} / {twin['seconds']:.2f} | "
            f"{fed['auc']:.4f} | {gap:+.4f} | {fed['seconds']:.1f} | {ratio:.0f}x | "
            f"{peak / 2**30:.2f} |"
        )
        if (dataset, split) == ("sba-full", "random") and r["trees"] is not None:
            detail = _detail(r)
    rows = "\n".join(lines)
    return f"""### {TREES}

`python scripts/bench_trees.py --dataset D --split S` for each row (measured up to
{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; defaults: 100 trees, depth 6, max-bins 64,
tree-learning-rate 0.1, lambda 1, min child weight 1). XGBoost own bins: `tree_method="hist"` on
the pooled raw features (categories as categoricals) with its own quantile sketch (max_bin 64),
what a lender's modeller would run, the issue's reference. XGBoost same bins: on the
federation's bin codes (the `centralized` baseline of a gbdt run), categorical features declared
categorical (its partition splits, which the engine makes the same way). Twin: this project's
engine on the pooled rows with the federation's bins; the federated ensemble must equal it
(splits identical, leaf values within 1e-9, tested). Federated: every institution a simulated
Flower node, one signed histogram message per tree level; seconds of the trees phase. Ratio:
federated trees phase over XGBoost own bins on one thread. Peak: resident memory of the whole
process tree.

{HEADER}
{rows}
{detail}{sweep_section(measure)}"""


def _detail(r: dict[str, Any]) -> str:
    t = r["trees"]
    crypto = r["signing_seconds"] + r["verification_seconds"]
    rest = t["exchange_seconds"] - t["institution_histogram_seconds_total"] - crypto
    return f"""
Where the sba-full (random split) trees phase went (`timing.trees` in metrics.json):

| trees phase | seconds |
|---|---:|
| histogram exchanges (one per tree level) | {t["levels"]} |
| waiting for the levels' replies | {t["exchange_seconds"]:.1f} |
| of which the institutions' histogram work (all, summed) | \
{t["institution_histogram_seconds_total"]:.1f} |
| of which signing (institutions) and verification (coordinator) | {crypto:.1f} |
| of which message transport and polling (the rest) | {rest:.1f} \
({1000 * rest / max(t["levels"], 1):.0f} ms per level) |
| coordinator: summing histograms, choosing splits | {t["coordinator_seconds"]:.1f} |
| whole simulation (setup, trees, evaluation) | {r["simulation_wall_seconds"]:.1f} |
"""
