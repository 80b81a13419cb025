"""A sweep's outputs: results.csv/json, a markdown summary, PNG plots and report.md."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jointcredit.simulations.sweep import SweepGrid, iter_settings


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
        for key in (
            "auc",
            "ks",
            "brier",
            "epsilon_spent",
            "mia_auc",
            "mia_tpr_at_1pct_fpr",
            "wall_seconds",
            "min_adverse_impact_ratio",
            "max_equal_opportunity_difference",
        ):
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
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    made: list[str] = []
    done = pd.DataFrame([r for r in rows if r["status"] == "done"])
    if done.empty:
        return made

    if "aggregator" in done and "attack" in done:
        table = done.groupby(["aggregator", "attack"], sort=False)["auc"].mean().unstack()
        fig, ax = plt.subplots(figsize=(7, 4))
        table.plot.bar(ax=ax, rot=0)
        ax.set_ylabel("federated AUC (pooled test)")
        ax.set_title("AUC under attack, per aggregation rule")
        ax.set_ylim(max(0.0, float(np.nanmin(table.to_numpy())) - 0.05), 1.0)
        fig.tight_layout()
        fig.savefig(out / "auc_under_attack.png", dpi=120)
        plt.close(fig)
        made.append("auc_under_attack.png")

    private = {"dp-record", "dp-institution"}
    if "privacy_setting" in done and done["privacy_setting"].isin(private).any():
        made.extend(_epsilon_plots(done, out, plt))

    fair = [(e["setting"], e["min_adverse_impact_ratio"][0]) for e in entries]
    fair = [(label, value) for label, value in fair if value is not None]
    if fair:
        made.append(_fairness_plot(fair, out, plt))

    walls = [(e["setting"], e["wall_seconds"][0]) for e in entries if e["wall_seconds"][0]]
    if walls:
        fig, ax = plt.subplots(figsize=(7, 0.5 * len(walls) + 1.5))
        ax.barh([w[0] for w in walls], [w[1] for w in walls])
        ax.invert_yaxis()
        ax.set_xlabel("wall time per run (s)")
        fig.tight_layout()
        fig.savefig(out / "wall_time.png", dpi=120)
        plt.close(fig)
        made.append("wall_time.png")
    return made


def _fairness_plot(fair: list[tuple[str, float]], out: Path, plt: Any) -> str:
    """The least adverse impact ratio of each setting (mean over seeds), against the 4/5 rule."""
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(fair) + 1.5))
    ax.barh([f[0] for f in fair], [f[1] for f in fair])
    ax.axvline(0.8, linestyle="--", color="grey", label="4/5 rule")
    ax.invert_yaxis()
    ax.set_xlim(0.0, 1.05)
    ax.set_xlabel("least adverse impact ratio over protected groups (approval rate / highest)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "fairness.png", dpi=120)
    plt.close(fig)
    return "fairness.png"


_DP_LABELS = {"dp-record": "record-level DP", "dp-institution": "institution-level DP"}


def _epsilon_plots(done: pd.DataFrame, out: Path, plt: Any) -> list[str]:
    """Utility and measured leakage against the target epsilon (mean ± sd over seeds), one
    line per DP setting, with the non-private run and clipping without noise (epsilon = inf)
    as reference lines."""
    made: list[str] = []
    for measure, name, label in (
        ("auc", "auc_vs_epsilon.png", "federated AUC (pooled test)"),
        ("mia_auc", "mia_vs_epsilon.png", "membership-inference AUC"),
        ("min_adverse_impact_ratio", "fairness_vs_epsilon.png", "least adverse impact ratio"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        drawn = False
        for setting, line_label in _DP_LABELS.items():
            dp = done[(done["privacy_setting"] == setting) & done["epsilon_target"].notna()]
            points = dp[dp[measure].notna()]
            if points.empty:
                continue
            stats = points.groupby("epsilon_target")[measure].agg(["mean", "std"]).sort_index()
            ax.errorbar(stats.index, stats["mean"], yerr=stats["std"].fillna(0), marker="o",
                        capsize=3, label=line_label)  # fmt: skip
            drawn = True
        if not drawn:
            plt.close(fig)
            continue
        clip_only = done[(done["privacy_setting"] == "dp-record") & done["epsilon_target"].isna()]
        references = [
            ("non-private", done[done["privacy_setting"] == "none"], "--"),
            ("clipping only (epsilon = inf)", clip_only, ":"),
        ]
        for ref_label, ref, style in references:
            if ref[measure].notna().any():
                ax.axhline(float(ref[measure].mean()), linestyle=style, color="grey",
                           label=ref_label)  # fmt: skip
        if measure == "mia_auc":
            ax.axhline(0.5, color="black", linewidth=0.5)
        ax.set_xscale("log")
        ax.set_xlabel("epsilon (per institution for record-level DP; delta as configured)")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
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
