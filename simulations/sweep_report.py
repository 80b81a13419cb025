"""A sweep's outputs: results.csv/json, a markdown summary, PNG plots and report.md."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jointcredit.simulations.sweep import SweepGrid, iter_settings
from jointcredit.simulations.sweep_plots import figures


def _stat(values: list[Any]) -> tuple[float | None, float | None]:
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not xs:
        return None, None
    return float(np.mean(xs)), (float(np.std(xs, ddof=1)) if len(xs) > 1 else None)


def _fmt(stat: tuple[float | None, float | None], digits: int = 4) -> str:
    mean, sd = stat
    if mean is None:
        return "-"
    return f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if sd is not None else "")


MEASURES = (
    "auc",
    "ks",
    "brier",
    "epsilon_spent",
    "mia_auc",
    "mia_tpr_at_1pct_fpr",
    "wall_seconds",
    "min_adverse_impact_ratio",
    "max_equal_opportunity_difference",
)


def summary(rows: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    """One entry per setting: mean and sd over seeds of each measure."""
    out = []
    for label, group in iter_settings(rows, keys):
        done = [r for r in group if r["status"] == "done"]
        entry: dict[str, Any] = {
            "setting": label,
            "runs": len(done),
            "failed": len(group) - len(done),
        }
        for key in MEASURES:
            entry[key] = _stat([r.get(key) for r in done])
        entry["values"] = {k: group[0][k] for k in keys}
        out.append(entry)
    return out


def markdown_table(entries: list[dict[str, Any]]) -> str:
    lines = [
        "| setting | runs | AUC | KS | Brier | epsilon | MIA AUC | MIA TPR@1%FPR | min AIR | "
        "max EOD | wall s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in entries:
        runs = f"{e['runs']}" + (f" ({e['failed']} failed)" if e["failed"] else "")
        lines.append(
            f"| {e['setting']} | {runs} | {_fmt(e['auc'])} | {_fmt(e['ks'])} | "
            f"{_fmt(e['brier'])} | {_fmt(e['epsilon_spent'], digits=2)} | "
            f"{_fmt(e['mia_auc'])} | {_fmt(e['mia_tpr_at_1pct_fpr'])} | "
            f"{_fmt(e['min_adverse_impact_ratio'], digits=3)} | "
            f"{_fmt(e['max_equal_opportunity_difference'], digits=3)} | "
            f"{_fmt(e['wall_seconds'], digits=1)} |"
        )
    return "\n".join(lines) + "\n"


def _plots(rows: list[dict[str, Any]], entries: list[dict[str, Any]], out: Path) -> list[str]:
    made = []
    for name, fig in figures(rows, entries).items():
        fig.savefig(out / name, dpi=120)
        made.append(name)
    return made


def write_outputs(
    rows: list[dict[str, Any]], grid: SweepGrid, grid_text: str, out: Path, command: str
) -> dict[str, Path]:
    keys = list(grid.grid)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(
        json.dumps({"grid": grid.model_dump(), "results": rows}, indent=2) + "\n", encoding="utf-8"
    )
    pd.DataFrame(rows).to_csv(out / "results.csv", index=False)
    entries = summary(rows, keys)
    table = markdown_table(entries)
    (out / "summary.md").write_text(table, encoding="utf-8")
    plots = _plots(rows, entries, out)
    failed = [r for r in rows if r["status"] == "failed"]
    report = [
        "# Sweep report\n",
        f"`{command}`: {len(rows)} runs ({len(failed)} failed), "
        f"{len(entries)} settings x {len(grid.seeds)} seed(s). Mean ± sd over seeds; AUC, KS "
        "and Brier of the final global model on the pooled test split.\n",
        "\n## Results\n\n" + table,
        *(f"\n![{p}]({p})\n" for p in plots),
        "\n## Grid\n\n```toml\n" + grid_text.strip() + "\n```\n",
        "\nEvery run's own outputs (signed model, metrics.json): `cells/<cell>/`; one row per run "
        "in results.csv / results.json.\n",
    ]
    if failed:
        report.append("\n## Failed runs\n\n")
        report.extend(f"- {r['cell']} (seed {r['seed']}): {r['error']}\n" for r in failed)
    (out / "report.md").write_text("".join(report), encoding="utf-8")
    return {"report": out / "report.md", "csv": out / "results.csv"}


def summary_json(rows: list[dict[str, Any]], grid: SweepGrid, out: Path) -> dict[str, Any]:
    """`sweep --json`: the outputs' paths, then per setting (summary.md's rows) its grid values,
    runs, failed runs and {mean, sd} of each measure (null: not measured; sd null: one run),
    and per run its cell id, grid values, seed, status and error."""
    keys = list(grid.grid)
    settings = [
        {
            "setting": e["setting"],
            "values": e["values"],
            "runs": e["runs"],
            "failed": e["failed"],
            **{k: {"mean": e[k][0], "sd": e[k][1]} for k in MEASURES},
        }
        for e in summary(rows, keys)
    ]
    runs = [
        {"cell": r["cell"], "values": {k: r[k] for k in keys}, "seed": r["seed"],
         "status": r["status"], "error": r.get("error") or None}
        for r in rows
    ]  # fmt: skip
    return {
        "report": str(out / "report.md"),
        "results_csv": str(out / "results.csv"),
        "results_json": str(out / "results.json"),
        "summary_md": str(out / "summary.md"),
        "plots": sorted(p.name for p in out.glob("*.png")),
        "runs": len(rows),
        "failed": sum(1 for r in rows if r["status"] == "failed"),
        "settings": settings,
        "cells": runs,
    }
