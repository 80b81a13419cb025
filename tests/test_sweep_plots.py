"""A sweep's figures say what they show: a title, chance and reference lines drawn and named
in the legend, AUC axes that include chance without magnifying noise around it, error bars
wherever a setting ran with more than one seed, and labels without placeholders."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure

from jointcredit.simulations.sweep import cells, load_grid, setting_label
from jointcredit.simulations.sweep_plots import figures
from jointcredit.simulations.sweep_report import summary, write_outputs

SEEDS = (1, 2)


def _row(seed: int, **values: Any) -> dict[str, Any]:
    rng = np.random.default_rng(seed + len(values))
    return {
        "status": "done",
        "seed": seed,
        "auc": 0.75 + 0.01 * rng.standard_normal(),
        "mia_auc": 0.5 + 0.002 * rng.standard_normal(),  # chance-level noise
        "min_adverse_impact_ratio": 0.85 + 0.02 * rng.standard_normal(),
        "wall_seconds": 50 + rng.standard_normal(),
        "privacy_setting": "none",
        "epsilon_target": None,
        **values,
    }


def _attack_rows() -> list[dict[str, Any]]:
    rows = []
    for agg, attack, seed in itertools.product(("fedavg", "median"), ("none", "sign-flip"), SEEDS):
        row = _row(seed, aggregator=agg, attack=attack)
        if (agg, attack) == ("fedavg", "sign-flip"):
            row["auc"] = 0.265 + 0.01 * seed  # FedAvg poisoned: below chance
        rows.append(row)
    return rows


def _privacy_rows() -> list[dict[str, Any]]:
    rows = [_row(seed, privacy="none", epsilon=None) for seed in SEEDS]
    for eps, seed in itertools.product((1.0, 8.0), SEEDS):
        rows.append(_row(seed, privacy="dp-record", epsilon=eps, privacy_setting="dp-record",
                         epsilon_target=eps))  # fmt: skip
    return rows


def _draw(rows: list[dict[str, Any]], keys: list[str]) -> dict[str, Figure]:
    return figures(rows, summary(rows, keys))


def _ax(fig: Figure) -> Axes:
    (ax,) = fig.axes
    return ax


def _legend(ax: Axes) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def _line_at(ax: Axes, y: float) -> str | None:
    """The label of a horizontal line at y, if one is drawn."""
    for line in ax.get_lines():
        ys = np.asarray(line.get_ydata(), dtype=float)
        if ys.size == 2 and np.allclose(ys, y) and not line.get_label().startswith("_"):
            return str(line.get_label())
    return None


def _has_error_bars(ax: Axes) -> bool:
    return any(isinstance(c, ErrorbarContainer) for c in ax.containers)


def test_every_figure_has_a_title_and_error_bars_over_seeds() -> None:
    drawn = {
        **_draw(_attack_rows(), ["aggregator", "attack"]),
        **_draw(_privacy_rows(), ["privacy", "epsilon"]),
    }
    assert set(drawn) == {
        "auc_under_attack.png", "auc_vs_epsilon.png", "mia_vs_epsilon.png",
        "fairness_vs_epsilon.png", "fairness.png", "wall_time.png",
    }  # fmt: skip
    for name, fig in drawn.items():
        ax = _ax(fig)
        assert ax.get_title(), name
        assert ax.get_xlabel() and (ax.get_ylabel() or ax.get_yticklabels()), name
        assert _has_error_bars(ax), name  # two seeds per setting
        for label in [t.get_text() for t in ax.get_yticklabels()] + _legend(ax):
            assert "=-" not in label and "nan" not in label, (name, label)


def test_attack_plot_shows_chance_and_the_fault_free_reference() -> None:
    ax = _ax(_draw(_attack_rows(), ["aggregator", "attack"])["auc_under_attack.png"])
    assert _line_at(ax, 0.5) == "chance (AUC 0.5)"
    rows = _attack_rows()
    fault_free = [r["auc"] for r in rows if (r["aggregator"], r["attack"]) == ("fedavg", "none")]
    reference = _line_at(ax, np.mean(fault_free))
    assert reference is not None and "FedAvg, no attack" in reference
    low, high = ax.get_ylim()
    assert low <= 0.265 and high >= 1.0  # FedAvg under sign-flip (below chance) is in view
    assert "chance (AUC 0.5)" in _legend(ax)


def test_auc_axes_include_chance_without_magnifying_noise() -> None:
    drawn = _draw(_privacy_rows(), ["privacy", "epsilon"])
    for name in ("auc_vs_epsilon.png", "mia_vs_epsilon.png"):
        ax = _ax(drawn[name])
        low, high = ax.get_ylim()
        assert low <= 0.4 and high >= 1.0, (name, low, high)
        assert _line_at(ax, 0.5) == "chance (AUC 0.5)", name
        assert "chance (AUC 0.5)" in _legend(ax)
    mia = _ax(drawn["mia_vs_epsilon.png"])
    assert any(label.startswith("non-private") for label in _legend(mia))
    fairness = _ax(drawn["fairness_vs_epsilon.png"])
    assert _line_at(fairness, 0.8) == "4/5 rule"


def test_one_seed_draws_no_error_bars() -> None:
    rows = [r for r in _privacy_rows() if r["seed"] == 1]
    wall = _ax(_draw(rows, ["privacy", "epsilon"])["wall_time.png"])
    assert not _has_error_bars(wall)


def test_a_non_private_cell_reads_no_dp(tmp_path: Path) -> None:
    grid_file = tmp_path / "grid.toml"
    grid_file.write_text('[base]\ndataset = "sba"\n[grid]\nprivacy = ["none", "dp-record"]\n'
                         "epsilon = [1.0, 8.0]\n")  # fmt: skip
    grid = load_grid(grid_file)
    labels = [setting_label(c.setting) for c in cells(grid, tmp_path / "out")]
    assert labels == [
        "privacy=none, no DP", "privacy=dp-record, epsilon=1.0", "privacy=dp-record, epsilon=8.0",
    ]  # fmt: skip
    rows = [{"cell": "c", **c.setting, "seed": 1, **_row(1, **c.setting)}
            for c in cells(grid, tmp_path / "out")]  # fmt: skip
    write_outputs(rows, grid, grid_file.read_text(), tmp_path / "out", "jointcredit sweep")
    summary_md = (tmp_path / "out" / "summary.md").read_text()
    assert "privacy=none, no DP" in summary_md and "epsilon=-" not in summary_md
    assert (tmp_path / "out" / "wall_time.png").is_file()
