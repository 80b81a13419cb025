"""A sweep's figures (matplotlib `Figure`s, no pyplot state): titled, with chance and
reference lines drawn and labelled, axes that keep chance-level noise looking like noise, and
error bars (one standard deviation over seeds) wherever a setting ran with more than one seed."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

CHANCE = 0.5
CHANCE_LABEL = "chance (AUC 0.5)"
FOUR_FIFTHS = 0.8
DP_LABELS = {"dp-record": "record-level DP", "dp-institution": "institution-level DP"}


def _auc_limits(values: Any) -> tuple[float, float]:
    """An AUC axis from 0.4 to 1, or lower if a value is: chance stays in view, and
    differences of a few thousandths around it stay as small as they are."""
    finite = [float(v) for v in np.ravel(values) if v is not None and not math.isnan(float(v))]
    low = min([0.4, *(v - 0.05 for v in finite)])
    return (max(0.0, math.floor(low * 10) / 10), 1.0)


def _chance(ax: Axes, *, vertical: bool = False) -> None:
    if vertical:
        ax.axvline(CHANCE, color="black", linewidth=0.8, linestyle="-.", label=CHANCE_LABEL)
    else:
        ax.axhline(CHANCE, color="black", linewidth=0.8, linestyle="-.", label=CHANCE_LABEL)


def _sd(values: pd.Series) -> np.ndarray | None:
    """Standard deviations for error bars, or None when every point ran once."""
    sd = values.to_numpy(dtype=float)
    return None if np.all(np.isnan(sd)) else np.nan_to_num(sd)


def attack_figure(done: pd.DataFrame) -> Figure:
    """Federated AUC per aggregation rule (groups) and attack (bars), against chance and the
    fault-free FedAvg run."""
    stats = done.groupby(["aggregator", "attack"], sort=False)["auc"].agg(["mean", "std"])
    aggregators = list(dict.fromkeys(stats.index.get_level_values(0)))
    attacks = list(dict.fromkeys(stats.index.get_level_values(1)))
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    width = 0.8 / len(attacks)
    x = np.arange(len(aggregators))
    for j, attack in enumerate(attacks):
        rows = stats.reindex([(a, attack) for a in aggregators])
        ax.bar(x + (j - (len(attacks) - 1) / 2) * width, rows["mean"], width,
               yerr=_sd(rows["std"]), capsize=3, label=f"attack: {attack}")  # fmt: skip
    ax.set_xticks(x, aggregators)
    reference = done[(done["aggregator"] == "fedavg") & (done["attack"] == "none")]["auc"]
    if reference.notna().any():
        ax.axhline(float(reference.mean()), color="grey", linestyle="--",
                   label=f"FedAvg, no attack ({float(reference.mean()):.3f})")  # fmt: skip
    _chance(ax)
    ax.set_ylim(0.0, 1.0)  # an attack can push the AUC below chance: the whole scale
    ax.set_xlabel("aggregation rule")
    ax.set_ylabel("federated AUC (pooled test)")
    ax.set_title("AUC under attack, per aggregation rule")
    # Below the axes: bars can reach any height.
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.15))
    fig.tight_layout()
    return fig


def epsilon_figures(done: pd.DataFrame) -> dict[str, Figure]:
    """Utility, measured leakage and fairness against the target epsilon, one line per DP
    setting, with the non-private run and clipping without noise (epsilon = inf) as reference
    lines."""
    made: dict[str, Figure] = {}
    for measure, name, label, title in (
        ("auc", "auc_vs_epsilon.png", "federated AUC (pooled test)", "Utility against epsilon"),
        ("mia_auc", "mia_vs_epsilon.png", "membership-inference AUC",
         "Membership-inference attack against epsilon"),
        ("min_adverse_impact_ratio", "fairness_vs_epsilon.png", "least adverse impact ratio",
         "Fairness against epsilon"),
    ):  # fmt: skip
        if measure not in done:
            continue
        fig = Figure(figsize=(6.5, 4.2))
        ax = fig.subplots()
        drawn: list[float] = []
        epsilons: set[float] = set()
        for setting, line_label in DP_LABELS.items():
            dp = done[(done["privacy_setting"] == setting) & done["epsilon_target"].notna()]
            points = dp[dp[measure].notna()]
            if points.empty:
                continue
            stats = points.groupby("epsilon_target")[measure].agg(["mean", "std"]).sort_index()
            ax.errorbar(stats.index, stats["mean"], yerr=_sd(stats["std"]), marker="o",
                        capsize=3, label=line_label)  # fmt: skip
            drawn.extend(stats["mean"])
            epsilons.update(float(e) for e in stats.index)
        if not drawn:
            continue
        clip_only = done[(done["privacy_setting"] == "dp-record") & done["epsilon_target"].isna()]
        for ref_label, ref, style in (
            ("non-private", done[done["privacy_setting"] == "none"], "--"),
            ("clipping only (epsilon = inf)", clip_only, ":"),
        ):
            if ref[measure].notna().any():
                value = float(ref[measure].mean())
                ax.axhline(value, linestyle=style, color="grey", label=f"{ref_label} ({value:.3f})")
                drawn.append(value)
        if measure == "min_adverse_impact_ratio":
            ax.axhline(FOUR_FIFTHS, color="black", linewidth=0.8, linestyle="-.",
                       label="4/5 rule")  # fmt: skip
            ax.set_ylim(0.0, 1.05)
        else:
            _chance(ax)
            ax.set_ylim(*_auc_limits(drawn))
        ax.set_xscale("log")
        ticks = sorted(epsilons)
        ax.set_xticks(ticks, [f"{e:g}" for e in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("epsilon (per institution for record-level DP; delta as configured)")
        ax.set_ylabel(label)
        ax.set_title(title)
        ax.legend(fontsize=7)
        fig.tight_layout()
        made[name] = fig
    return made


def _bars(entries: list[dict[str, Any]], key: str) -> tuple[list[str], list[float], list[float]]:
    """(setting, mean, sd) of the settings that measured `key`; sd 0 for a single seed."""
    kept = [e for e in entries if e[key][0] is not None]
    return (
        [e["setting"] for e in kept],
        [e[key][0] for e in kept],
        [e[key][1] or 0.0 for e in kept],
    )


def _horizontal(entries: list[dict[str, Any]], key: str) -> tuple[Figure, Axes] | None:
    labels, means, sds = _bars(entries, key)
    if not labels:
        return None
    fig = Figure(figsize=(8, 0.45 * len(labels) + 1.8))
    ax = fig.subplots()
    several = any(e[key][1] is not None for e in entries if e[key][0] is not None)
    ax.barh(labels, means, xerr=sds if several else None, capsize=3)
    ax.invert_yaxis()
    return fig, ax


def fairness_figure(entries: list[dict[str, Any]]) -> Figure | None:
    """The least adverse impact ratio of each setting (mean over seeds), against the 4/5 rule."""
    drawn = _horizontal(entries, "min_adverse_impact_ratio")
    if drawn is None:
        return None
    fig, ax = drawn
    ax.axvline(FOUR_FIFTHS, linestyle="--", color="grey", label="4/5 rule")
    ax.set_xlim(0.0, 1.05)
    ax.set_xlabel("least adverse impact ratio over protected groups (approval rate / highest)")
    ax.set_title("Fairness per setting")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def wall_time_figure(entries: list[dict[str, Any]]) -> Figure | None:
    drawn = _horizontal(entries, "wall_seconds")
    if drawn is None:
        return None
    fig, ax = drawn
    ax.set_xlim(left=0.0)
    ax.set_xlabel("wall time per run (s)")
    ax.set_title("Wall time per setting")
    fig.tight_layout()
    return fig


def figures(rows: list[dict[str, Any]], entries: list[dict[str, Any]]) -> dict[str, Figure]:
    """Every figure the sweep's results call for, by file name."""
    done = pd.DataFrame([r for r in rows if r["status"] == "done"])
    made: dict[str, Figure] = {}
    if done.empty:
        return made
    if "aggregator" in done and "attack" in done:
        made["auc_under_attack.png"] = attack_figure(done)
    if "privacy_setting" in done and done["privacy_setting"].isin(list(DP_LABELS)).any():
        made.update(epsilon_figures(done))
    for name, fig in (
        ("fairness.png", fairness_figure(entries)),
        ("wall_time.png", wall_time_figure(entries)),
    ):
        if fig is not None:
            made[name] = fig
    return made
