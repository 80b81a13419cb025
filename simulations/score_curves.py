"""Discrimination and calibration curves from score-band counts alone (goods and bads per band
of the score scale, summed over institutions): the validation report's ROC, KS, gains table and
calibration without a single row.

Bands are ordered by score, low (risky) first; a cut-off at a band edge declines every band
below it. Rows within one band are ties: the area under the band-edge ROC counts them half, as
the rank statistic does, so with one band per integer score it equals the AUC of the rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Curves:
    cut: np.ndarray  # band edges: the cut-off scores
    bad_below: np.ndarray  # share of bads scored below each cut-off (true positive rate)
    good_below: np.ndarray  # share of goods below it (false positive rate)

    @property
    def auc(self) -> float:
        return float(np.trapezoid(self.bad_below, self.good_below))

    @property
    def gini(self) -> float:
        return 2 * self.auc - 1

    @property
    def ks(self) -> float:
        return float(np.max(self.bad_below - self.good_below))

    @property
    def ks_at(self) -> float:
        return float(self.cut[int(np.argmax(self.bad_below - self.good_below))])


def curves(edges: np.ndarray, good: np.ndarray, bad: np.ndarray) -> Curves:
    good, bad = np.asarray(good, "float64"), np.asarray(bad, "float64")
    if good.sum() <= 0 or bad.sum() <= 0:
        raise ValueError("curves need both goods and bads")
    zero = np.zeros(1)
    return Curves(
        cut=np.asarray(edges, "float64"),
        bad_below=np.concatenate([zero, np.cumsum(bad)]) / bad.sum(),
        good_below=np.concatenate([zero, np.cumsum(good)]) / good.sum(),
    )


@dataclass(frozen=True)
class GainsRow:
    group: int
    score_from: float
    score_to: float
    applicants: int
    bads: int
    bad_rate: float
    cumulative_share: float  # of all applicants, from the riskiest
    cumulative_bad_capture: float  # share of all bads in this group and the riskier ones
    lift: float  # this group's bad rate over the overall bad rate


def gains_table(
    edges: np.ndarray, good: np.ndarray, bad: np.ndarray, groups: int = 10
) -> list[GainsRow]:
    """Groups of whole bands, each closing once it holds a `groups`-th of the applicants (as
    near to deciles as bands allow), riskiest first."""
    good, bad = np.asarray(good, "int64"), np.asarray(bad, "int64")
    n = good + bad
    total, total_bad = int(n.sum()), int(bad.sum())
    if total == 0:
        return []
    overall = total_bad / total
    rows: list[GainsRow] = []
    start, seen, seen_bad = 0, 0, 0
    for i in range(len(n)):
        last = i == len(n) - 1
        if (seen + int(n[start : i + 1].sum())) < total * (len(rows) + 1) / groups and not last:
            continue
        count, bads = int(n[start : i + 1].sum()), int(bad[start : i + 1].sum())
        if count:
            seen, seen_bad = seen + count, seen_bad + bads
            rate = bads / count
            rows.append(
                GainsRow(
                    group=len(rows) + 1,
                    score_from=float(edges[start]),
                    score_to=float(edges[i + 1]),
                    applicants=count,
                    bads=bads,
                    bad_rate=rate,
                    cumulative_share=seen / total,
                    cumulative_bad_capture=seen_bad / total_bad if total_bad else 0.0,
                    lift=rate / overall if overall else 0.0,
                )
            )
        start = i + 1
    return rows


def observed_bad_rate(good: np.ndarray, bad: np.ndarray, min_count: int = 1) -> np.ndarray:
    """Each band's bad rate (NaN for a band with fewer than `min_count` applicants)."""
    n = np.asarray(good, "float64") + np.asarray(bad, "float64")
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.asarray(bad, "float64") / n
    rate[n < min_count] = np.nan
    out: np.ndarray = rate
    return out
