"""The validation report's figures (matplotlib, drawn off screen to PNG bytes)."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes

from jointcredit.simulations.score_curves import Curves, observed_bad_rate

SIZE = (6.0, 4.0)


def _png(draw: Callable[[Axes], None]) -> bytes:
    fig, ax = plt.subplots(figsize=SIZE, dpi=100)
    try:
        draw(ax)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)


def roc(c: Curves) -> bytes:
    def draw(ax: Axes) -> None:
        ax.plot(
            c.good_below, c.bad_below, lw=2, label=f"model (AUC {c.auc:.3f}, Gini {c.gini:.3f})"
        )
        ax.plot([0, 1], [0, 1], "--", color="grey", label="no discrimination")
        ax.set_xlabel("false positive rate (goods declined)")
        ax.set_ylabel("true positive rate (bads declined)")
        ax.set_title("ROC, pooled over institutions")
        ax.legend(loc="lower right")

    return _png(draw)


def ks(c: Curves) -> bytes:
    def draw(ax: Axes) -> None:
        ax.plot(c.cut, c.bad_below, lw=2, label="bads, cumulative")
        ax.plot(c.cut, c.good_below, lw=2, label="goods, cumulative")
        at = int(np.argmax(c.bad_below - c.good_below))
        ax.vlines(
            c.cut[at],
            c.good_below[at],
            c.bad_below[at],
            colors="black",
            label=f"KS {c.ks:.3f} at score {c.cut[at]:g}",
        )
        ax.set_xlabel("score cut-off")
        ax.set_ylabel("share scored below")
        ax.set_title("Kolmogorov-Smirnov")
        ax.legend(loc="lower right")

    return _png(draw)


def calibration(
    edges: np.ndarray, good: np.ndarray, bad: np.ndarray, predicted: np.ndarray
) -> bytes:
    """Observed bad rate against the PD each band's scores stand for (bands of 20+ applicants;
    marker area by applicants)."""
    rate = observed_bad_rate(good, bad, min_count=20)
    n = np.asarray(good) + np.asarray(bad)
    keep = ~np.isnan(rate)

    def draw(ax: Axes) -> None:
        top = float(
            max(np.nanmax(predicted[keep], initial=0.0), np.nanmax(rate[keep], initial=0.0))
        )
        ax.plot([0, top], [0, top], "--", color="grey", label="perfect calibration")
        ax.scatter(
            predicted[keep],
            rate[keep],
            s=10 + 200 * n[keep] / max(n.max(), 1),
            alpha=0.7,
            label="score bands",
        )
        ax.set_xlabel("predicted PD (band midpoint)")
        ax.set_ylabel("observed bad rate")
        ax.set_title("Calibration")
        ax.legend(loc="upper left")

    return _png(draw)


def score_distributions(
    edges: np.ndarray, per_institution: Mapping[str, tuple[np.ndarray, np.ndarray]]
) -> bytes:
    """Each institution's share of applicants per score band (solid: goods, dashed: bads)."""
    mid = (edges[:-1] + edges[1:]) / 2

    def draw(ax: Axes) -> None:
        for k, (inst, (good, bad)) in enumerate(sorted(per_institution.items())):
            color = f"C{k % 10}"
            for counts, style, what in ((good, "-", "goods"), (bad, "--", "bads")):
                total = max(float(np.sum(counts)), 1.0)
                ax.plot(mid, np.asarray(counts) / total, style, color=color, label=f"{inst} {what}")
        ax.set_xlabel("score")
        ax.set_ylabel("share of the institution's goods / bads")
        ax.set_title("Score distribution per institution")
        ax.legend(fontsize=6, ncol=2)

    return _png(draw)


def institution_aucs(rows: Mapping[str, Mapping[str, float | None]]) -> bytes:
    """Grouped bars: each institution's AUC under each model (global, personalised, local)."""
    names = sorted(rows)
    kinds = list(dict.fromkeys(k for r in rows.values() for k in r))  # as given

    def draw(ax: Axes) -> None:
        width = 0.8 / max(len(kinds), 1)
        x = np.arange(len(names))
        for j, kind in enumerate(kinds):
            values = [rows[n].get(kind) for n in names]
            ax.bar(x + j * width, [np.nan if v is None else v for v in values], width, label=kind)
        ax.set_xticks(x + width * (len(kinds) - 1) / 2, names, rotation=20, ha="right", fontsize=7)
        ax.axhline(0.5, color="black", linewidth=0.8, linestyle="-.", label="chance (AUC 0.5)")
        ax.set_ylim(0.4, 1.0)  # chance in view
        ax.set_ylabel("AUC on the institution's own test split")
        ax.set_title("Per-institution AUC")
        ax.legend(fontsize=7)

    return _png(draw)
