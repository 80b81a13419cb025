"""The sections of docs/BENCHMARKS.md: what each benchmark case ran and measured.

Simulation sections read `metrics.json` through `RunMetrics`; sweep sections read the sweep's
results and summary table.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jointcredit.federation.metrics import RunMetrics

ROOT = Path(__file__).resolve().parents[1]
Measure = Callable[[list[str]], tuple[float, int, subprocess.CompletedProcess[str]]]

SERVICE = "eligibility service: decisions over HTTP (audit log on)"
SERVICE_TREES = "eligibility service, gbdt of 100 trees of depth 6 (TreeSHAP reasons)"
SERVICE_LOGREG = "eligibility service, logreg (for comparison with the default model)"
ROBUST = "robust aggregation: sba sample, 20 lenders x 20 rounds, 2 of them attacking"
ROBUST_GRID = "simulations/grids/robust.toml"
RECORD_DP = "record-level DP: sba sample, 20 lenders x 20 rounds, epsilon sweep"
INSTITUTION_DP = "institution-level DP: sba sample, 20 lenders x 20 rounds, epsilon sweep"
SECAGG = "secure aggregation (SecAgg+): sba sample, 20 lenders x 20 rounds, time overhead"
SECAGG_GRID = "simulations/grids/secagg.toml"
DP_FULL = "record-level DP on full data: sba-full, 20 lenders x 20 rounds, logreg, epsilon 1"
DEPLOY = "deployment: SuperLink + 3 SuperNodes as processes, TLS + node auth, 3 rounds"
SWEEPS = {
    RECORD_DP: (
        "simulations/grids/privacy.toml",
        "sweep-privacy",
        "DP-SGD in every lender (Opacus, Poisson sampling, noise calibrated to spend each "
        "lender's epsilon over the 20 rounds, delta 1e-5), against the non-private default "
        "recipe; epsilon = inf clips without noise. MIA: the larger of the loss-threshold and "
        "offline-LiRA attacks' AUC (10,000 members, 10,000 non-members).",
    ),
    INSTITUTION_DP: (
        "simulations/grids/institution_dp.toml",
        "sweep-institution-dp",
        "Flower's DifferentialPrivacyServerSideFixedClipping around equally weighted FedAvg "
        "(clipping norm 1), noise calibrated by Flower's RDP accountant to each epsilon over 20 "
        "releases without sampling; the non-private reference is plain FedAvg.",
    ),
}


def run_sweep(name: str, grid: str, out: Path) -> tuple[str, float, Path]:
    """Run (or resume) a sweep; returns its summary table, seconds and shown path."""
    cmd = [sys.executable, "-m", "jointcredit.cli", "sweep", "--grid", grid, "--out", str(out)]
    print(f"running: {' '.join(cmd[2:])}", flush=True)
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    table = (out / "summary.md").read_text(encoding="utf-8")
    shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    return table, time.monotonic() - started, shown


def robust_section(out: Path) -> str:
    table, seconds, shown = run_sweep(ROBUST, ROBUST_GRID, out)
    return f"""### {ROBUST}

`jointcredit sweep --grid {ROBUST_GRID} --out {shown}` (measured
{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {seconds:.0f} s here, cells already
in OUT are reused). Every aggregation rule x attack, 2 of the 20 lenders attacking (drawn with
the seed; they sign their poisoned updates with their own valid keys), no baselines. Sign-flip
and scale multiply the honest update by -10 and 10; label-flip trains on inverted labels. AUC
of the final global model on the pooled test split.

{table}
Plots and the full report: `{shown}/report.md`.
"""


def _results(out: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads((out / "results.json").read_text())["results"]
    return [r for r in rows if r["status"] == "done"]


def deploy_section(measure: Measure) -> str:
    cmd = [sys.executable, "scripts/deploy_demo.py", "--out", str(ROOT / "runs" / "deploy-demo"),
           "--rounds", "3"]  # fmt: skip
    print(f"running: {' '.join(cmd[1:])}", flush=True)
    wall, peak, proc = measure(cmd)
    if proc.returncode != 0:
        raise SystemExit(f"{DEPLOY} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    s = json.loads(proc.stdout.strip().splitlines()[-1])
    return f"""### {DEPLOY}

`python scripts/deploy_demo.py --out runs/deploy-demo --rounds 3` (measured
{datetime.now(UTC):%Y-%m-%d %H:%M} UTC): provisions a federation (CA, TLS certificate, node and
signing keys), starts `flower-superlink` (TLS, node authentication) and three nodes
(`jointcredit node start`: a SuperNode and its long-lived ClientApp worker) on 127.0.0.1,
each with one shipped lender's file, registers the nodes,
runs `flwr run` and reads the run's final status, verifies the signed model, stops everything.

- whole demo {wall:.1f} s wall (setup {s["setup_seconds"]} s: provisioning, SuperLink start,
  registration; training run {s["run_seconds"]} s for {s["rounds"]} rounds, including the
  preprocessing query, per-round evaluation and personalisation); peak memory of the whole
  process tree (SuperLink, ServerApp, SuperNodes, their ClientApp workers and tasks)
  {peak / 2**30:.2f} GiB
- status {s["status"]}; {s["verified_replies"]} signed replies verified; AUC (the institutions'
  weighted evaluation) {s["auc"]:.4f}. Each message runs in a fork of the node's worker, which
  imported torch and the app once (docs/RELIABILITY.md, "Deployed rounds at partner speed").
"""


def secagg_section(out: Path) -> str:
    table, seconds, shown = run_sweep(SECAGG, SECAGG_GRID, out)
    rows = _results(out)
    plain = next(r for r in rows if r["privacy_setting"] == "none")
    lines = []
    for r in rows:
        if r["privacy_setting"] != "secagg":
            continue
        m = RunMetrics.read(out / "cells" / r["cell"] / "metrics.json")
        plain_m = RunMetrics.read(out / "cells" / plain["cell"] / "metrics.json")
        train, base = m.timing.training_seconds, plain_m.timing.training_seconds
        sa = m.privacy.secagg
        if sa is None:
            raise ValueError(f"cell {r['cell']}: a secagg run without its SecAgg+ record")
        lines.append(
            f"| {sa.num_shares} / {sa.reconstruction_threshold} | {train:.1f} | {base:.1f} | "
            f"{100 * (train / base - 1):+.0f} % | {r['wall_seconds']:.1f} | "
            f"{plain['wall_seconds']:.1f} | {r['auc'] - plain['auc']:+.5f} |"
        )
    checks = "\n".join(lines)
    return f"""### {SECAGG}

`jointcredit sweep --grid {SECAGG_GRID} --out {shown}` (measured
{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {seconds:.0f} s here, cells already in OUT are
reused). Flower's SecAgg+ workflow for every training round (4 message exchanges per round
instead of 1, every stage reply signed and verified) against plain FedAvgM. The plain run's
training phase also includes a federated evaluation exchange per round, which the SecAgg+ run
does not do, so the overhead is if anything understated.

{table}
| shares / threshold | training s | plain training s | overhead | wall s | plain wall s | AUC diff |
|---|---:|---:|---:|---:|---:|---:|
{checks}
"""


def privacy_section(name: str, grid: str, out: Path, about: str) -> str:
    """A DP sweep: its table, and the issue's two checks read off the results."""
    table, seconds, shown = run_sweep(name, grid, out)
    rows = _results(out)
    plain = [r["auc"] for r in rows if r["privacy_setting"] == "none"]
    lines = []
    for r in sorted(
        (r for r in rows if r["privacy_setting"] != "none" and r["epsilon_target"]),
        key=lambda r: r["epsilon_target"],
    ):
        drop = plain[0] - r["auc"] if plain else float("nan")
        lines.append(
            f"| {r['epsilon_target']:g} | {fmt(r['epsilon_spent'], 3)} | {fmt(r['auc'])} | "
            f"{drop:+.4f} | {fmt(r['mia_auc'])} | {fmt(r['mia_tpr_at_1pct_fpr'])} |"
        )
    checks = "\n".join(lines)
    return f"""### {name}

`jointcredit sweep --grid {grid} --out {shown}` (measured
{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {seconds:.0f} s here, cells already in OUT are
reused). {about}

{table}
Against the non-private run (AUC {fmt(plain[0] if plain else None)}):

| epsilon | spent | AUC | AUC drop | MIA AUC | MIA TPR at 1% FPR |
|---:|---:|---:|---:|---:|---:|
{checks}

Plots (`auc_vs_epsilon.png`, `mia_vs_epsilon.png`) and the full report: `{shown}/report.md`.
"""


def fmt(v: Any, d: int = 4) -> str:
    return "-" if v is None else f"{v:.{d}f}"


def privacy_lines(m: RunMetrics) -> str:
    p = m.privacy
    mia = (
        f"Membership-inference audit: AUC {fmt(p.mia_auc)}, TPR at 1% FPR "
        f"{fmt(p.mia_tpr_at_1pct_fpr)}.\n"
    )
    if p.setting == "none":
        return mia
    text = f"Privacy: {p.setting}, epsilon {p.epsilon} (delta {p.delta}), spent "
    text += f"{fmt(p.epsilon_spent, 3)} at most. "
    # The same data without DP (case 2) for the AUC drop, when it has been run.
    plain = ROOT / "runs" / "bench-1" / "metrics.json"
    if m.dataset and "(full)" in m.dataset and plain.is_file():
        base = RunMetrics.read(plain).federated.auc
        if base is not None and m.federated.auc is not None:
            text += f"Non-private federated AUC on the same data {base:.4f}: drop "
            text += f"{base - m.federated.auc:+.4f}. "
    return text + mia


def section(name: str, cmd: list[str], wall: float, peak: int, m: RunMetrics) -> str:
    fed, cen, lo = m.federated, m.centralized, m.local_only
    if cen is None or lo is None:
        raise ValueError("a benchmark simulation runs with its baselines")
    rows = "\n".join(
        f"| {inst} | {fmt(r.auc_local_only, 3)} | {fmt(r.auc, 3)} | {fmt(r.auc_personalized, 3)} |"
        for inst, r in m.per_institution.items()
    )
    method = m.personalization.method or "none"
    beats = sum(
        1
        for r in m.per_institution.values()
        if r.auc_personalized is not None
        and r.auc_local_only is not None
        and r.auc_personalized > r.auc_local_only
    )
    t = m.timing
    sec = m.security
    crypto = sec.signing_seconds + sec.verification_seconds
    replies = sec.verified_replies + sec.rejected_replies
    rounds = t.round_seconds or [float("nan")]
    # A round is a train and an evaluate exchange; the run adds a query and a personalisation
    # exchange: 2R + 2 exchanges of equal size, two of them per round.
    per_round = crypto * 2 / (2 * len(rounds) + 2)
    mean_round = sum(rounds) / len(rounds)
    gap = "-" if fed.auc is None or cen.auc is None else f"{fed.auc - cen.auc:+.4f}"
    return f"""### {name}

`{" ".join(cmd[2:])}` (measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC)

- wall time {wall:.1f} s (federation {fmt(t.simulation_seconds, 1)} s, baselines
  {fmt(t.baselines_seconds, 1)} s); peak memory of the process tree
  {peak / 2**30:.2f} GiB
- {len(m.institutions)} institutions, {len(m.rounds)} rounds, {m.dataset}, \
{m.config.get("split", "random")} split

| model (pooled test split) | AUC | KS | Brier |
|---|---:|---:|---:|
| federated | {fmt(fed.auc)} | {fmt(fed.ks)} | {fmt(fed.brier)} |
| centralized | {fmt(cen.auc)} | {fmt(cen.ks)} | {fmt(cen.brier)} |
| local-only (mean over institutions) | {fmt(lo.mean_auc)} | {fmt(lo.mean_ks)} | \
{fmt(lo.mean_brier)} |

Signed updates: {replies} replies, signing {sec.signing_seconds:.3f} s + verification
{sec.verification_seconds:.3f} s in all ({1000 * crypto / max(replies, 1):.2f} ms per reply),
{1000 * per_round:.1f} ms per round against a mean training round of
{1000 * mean_round:.0f} ms: {100 * per_round / mean_round:.2f} % of
round time ({100 * crypto / t.server_seconds:.2f} % of the whole federation);
{sec.rejected_replies} rejected.

{privacy_lines(m)}Federated - centralized AUC: {gap}. Mean own-test AUC of
local-only models: {fmt(lo.mean_own_auc)}. Personalised ({method}) beats local-only at
{beats} of {len(m.per_institution)} institutions (docs/PERSONALISATION.md).

<details><summary>Per institution: AUC on its own test split</summary>

| institution | local-only | global federated | personalised |
|---|---:|---:|---:|
{rows}

</details>
"""
