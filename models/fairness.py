"""Group fairness from summed counts: the same arithmetic for the federation and for pooled rows.

Everything is derived from one count vector: for each protected attribute, each of its groups
and each label (repaid, defaulted), the number of test applicants at every whole score of the
350-950 scale (`ScoreScale` rounds scores to whole points, and the policy compares whole
scores). Approvals, referrals, declines and the confusion counts at a cut-off are sums over
that histogram; AUC per group is exact at the score's resolution (ties count half, as in
scikit-learn's `roc_auc_score` on the same whole scores); calibration compares each score's PD
with the observed default rate. Each institution computes its vector on its own test rows
(`count_vector`); under `secagg` the coordinator sees only the federation's SecAgg+ sum,
otherwise each institution's vector: counts, never a row, but at (group, label, whole score)
resolution, so on a small test split many cells are one applicant. `fairness` on the pooled
rows' vector is the centralized computation: the federated sum of vectors is that vector
exactly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from jointcredit.federation.fairness import (
    Calibration,
    CalibrationBand,
    Cutoffs,
    Fairness,
    GroupCounts,
)
from jointcredit.models.scorecard import ScoreScale

SCALE = ScoreScale()
N_SCORES = SCALE.max_score - SCALE.min_score + 1
LABELS = 2  # repaid (0), defaulted (1)
# Calibration bands: 50-point bands of the score (one PDO: the odds double across a band).
BAND_WIDTH = 50
# Most groups one attribute may have in the exchange (each costs 2 x 601 counts).
MAX_GROUPS = 64


class GroupLayout(BaseModel):
    """The agreed groups per protected attribute, in order: positions in the count vector."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attributes: dict[str, list[str]]

    @property
    def length(self) -> int:
        return sum(len(g) for g in self.attributes.values()) * LABELS * N_SCORES

    def check(self, protected: tuple[str, ...]) -> None:
        if list(self.attributes) != list(protected):
            raise ValueError(
                f"the groups are for {list(self.attributes)}, the schema protects {list(protected)}"
            )
        for name, groups in self.attributes.items():
            if len(groups) != len(set(groups)) or not 0 < len(groups) <= MAX_GROUPS:
                raise ValueError(f"{name}: 1 to {MAX_GROUPS} distinct groups expected")


def group_values(groups: pd.DataFrame, protected: tuple[str, ...]) -> dict[str, list[str]]:
    """The groups present in these rows per attribute (sorted): what an institution says to
    agree the layout. Refuses an attribute with more than `MAX_GROUPS` groups."""
    out: dict[str, list[str]] = {}
    for name in protected:
        values = sorted({str(v) for v in groups[name]})
        if len(values) > MAX_GROUPS:
            raise ValueError(
                f"protected attribute {name!r} has {len(values)} groups; at most {MAX_GROUPS} "
                "are measured (band it first, e.g. ages into age bands)"
            )
        out[name] = values
    return out


def merge_values(answers: list[dict[str, list[str]]], protected: tuple[str, ...]) -> GroupLayout:
    """The federation's layout: every group any institution has, per attribute, sorted."""
    merged: dict[str, list[str]] = {}
    for name in protected:
        values = sorted({v for answer in answers for v in answer.get(name, [])})
        if len(values) > MAX_GROUPS:
            raise ValueError(f"protected attribute {name!r}: {len(values)} groups in all")
        merged[name] = values or ["(none)"]
    return GroupLayout(attributes=merged)


def count_vector(
    scores: np.ndarray, y: np.ndarray, groups: pd.DataFrame, layout: GroupLayout
) -> np.ndarray:
    """Applicants per (attribute, group, label, whole score), flattened (int64)."""
    s = np.asarray(scores, dtype=np.int64) - SCALE.min_score
    if s.size and (s.min() < 0 or s.max() >= N_SCORES):
        raise ValueError("scores outside the 350-950 scale")
    label = np.asarray(y, dtype=np.int64)
    parts = []
    for name, values in layout.attributes.items():
        index = {v: i for i, v in enumerate(values)}
        g = np.asarray([index.get(str(v), -1) for v in groups[name]], dtype=np.int64)
        if (g < 0).any():
            raise ValueError(f"{name}: a row's group is not among the agreed groups")
        cell = (g * LABELS + label) * N_SCORES + s
        parts.append(np.bincount(cell, minlength=len(values) * LABELS * N_SCORES))
    out: np.ndarray = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    return out


def scores_of(pd_: np.ndarray) -> np.ndarray:
    """Whole scores of PDs, as the service computes them."""
    return SCALE.score(pd_)


def _rate(num: int | float, den: int | float) -> float | None:
    return float(num) / float(den) if den else None


def _spread(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) - min(present) if len(present) >= 2 else None


def auc_from_histograms(repaid: np.ndarray, defaulted: np.ndarray) -> float | None:
    """AUC of the score as a default detector (a lower score flags default) from the two
    labels' histograms over ascending scores; ties count half. None without both labels."""
    n0, n1 = int(repaid.sum()), int(defaulted.sum())
    if n0 == 0 or n1 == 0:
        return None
    above = np.cumsum(repaid[::-1])[::-1] - repaid  # repaid applicants scoring strictly higher
    return float((defaulted * (above + 0.5 * repaid)).sum()) / (n0 * n1)


_PD_AT = np.asarray([SCALE.pd_at(SCALE.min_score + i) for i in range(N_SCORES)])


def calibration(repaid: np.ndarray, defaulted: np.ndarray) -> Calibration | None:
    n = repaid + defaulted
    total = int(n.sum())
    if total == 0:
        return None
    # The clipped ends stand for every PD beyond them; their PD is the end score's.
    predicted = float((n * _PD_AT).sum()) / total
    observed = float(defaulted.sum()) / total
    bands = []
    for lo in range(SCALE.min_score, SCALE.max_score, BAND_WIDTH):
        # The last band also holds the top score (900-950), not a band of its own.
        last = lo + BAND_WIDTH >= SCALE.max_score
        hi = SCALE.max_score if last else lo + BAND_WIDTH - 1
        part = slice(lo - SCALE.min_score, hi - SCALE.min_score + 1)
        k = int(n[part].sum())
        if k == 0:
            continue
        bands.append(
            CalibrationBand(
                scores=(lo, hi),
                applicants=k,
                predicted_default_rate=float((n[part] * _PD_AT[part]).sum()) / k,
                observed_default_rate=float(defaulted[part].sum()) / k,
            )
        )
    return Calibration(
        predicted_default_rate=predicted,
        observed_default_rate=observed,
        observed_over_predicted=_rate(observed, predicted),
        bands=bands,
    )


def group_counts(
    repaid: np.ndarray, defaulted: np.ndarray, approve: int, decline: int
) -> GroupCounts:
    a, d = approve - SCALE.min_score, decline - SCALE.min_score
    n0, n1 = int(repaid.sum()), int(defaulted.sum())
    tn, fn = int(repaid[a:].sum()), int(defaulted[a:].sum())
    declined = int(repaid[:d].sum() + defaulted[:d].sum())
    fp, tp = n0 - tn, n1 - fn
    n = n0 + n1
    undefined: dict[str, str] = {}
    if n == 0:
        undefined["approval_rate"] = "no applicant in this group"
    if n1 == 0:
        undefined["true_positive_rate"] = "no defaulted applicant in this group"
        undefined["auc"] = "no defaulted applicant in this group"
    if n0 == 0:
        undefined["false_positive_rate"] = "no repaid applicant in this group"
        undefined["repaid_approval_rate"] = "no repaid applicant in this group"
        undefined["auc"] = "no repaid applicant in this group"
    return GroupCounts(
        applicants=n,
        defaulted=n1,
        approved=tn + fn,
        referred=n - tn - fn - declined,
        declined=declined,
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        approval_rate=_rate(tn + fn, n),
        true_positive_rate=_rate(tp, n1),
        false_positive_rate=_rate(fp, n0),
        repaid_approval_rate=_rate(tn, n0),
        undefined=undefined,
    )


def fairness(
    total: np.ndarray, layout: GroupLayout, cutoffs: Cutoffs, *, secure: bool = False
) -> Fairness:
    """Every fairness figure from the (summed) count vector."""
    if total.shape != (layout.length,) or (total < 0).any():
        raise ValueError(f"expected {layout.length} non-negative counts")
    groups: dict[str, dict[str, GroupCounts]] = {}
    air: dict[str, dict[str, float | None]] = {}
    dpd: dict[str, float | None] = {}
    eod: dict[str, float | None] = {}
    aucs: dict[str, dict[str, float | None]] = {}
    calib: dict[str, dict[str, Calibration | None]] = {}
    at = 0
    for name, values in layout.attributes.items():
        hists = total[at : at + len(values) * LABELS * N_SCORES].reshape(
            len(values), LABELS, N_SCORES
        )
        at += len(values) * LABELS * N_SCORES
        counts = {
            v: group_counts(hists[i, 0], hists[i, 1], cutoffs.approve, cutoffs.decline)
            for i, v in enumerate(values)
        }
        groups[name] = counts
        rates = {v: c.approval_rate for v, c in counts.items()}
        top = max((r for r in rates.values() if r is not None), default=None)
        air[name] = {v: (r / top if r is not None and top else None) for v, r in rates.items()}
        dpd[name] = _spread(list(rates.values()))
        eod[name] = _spread([c.repaid_approval_rate for c in counts.values()])
        aucs[name] = {
            v: auc_from_histograms(hists[i, 0], hists[i, 1]) for i, v in enumerate(values)
        }
        calib[name] = {v: calibration(hists[i, 0], hists[i, 1]) for i, v in enumerate(values)}
        for v, rate in air[name].items():
            if rate is None and top == 0:
                counts[v].undefined["adverse_impact_ratio"] = "no group has an approval"
    return Fairness(
        attributes=list(layout.attributes),
        groups=groups,
        adverse_impact_ratio=air,
        equal_opportunity_difference=eod,
        demographic_parity_difference=dpd,
        auc_by_group=aucs,
        calibration_by_group=calib,
        cutoffs=cutoffs,
        secure_sum=secure,
    )


def centralized(
    pd_: np.ndarray,
    y: np.ndarray,
    groups: pd.DataFrame,
    protected: tuple[str, ...],
    cutoffs: Cutoffs,
) -> Fairness:
    """The same figures on pooled rows (the reference a federated run must equal)."""
    layout = merge_values([group_values(groups, protected)], protected)
    return fairness(count_vector(scores_of(pd_), y, groups, layout), layout, cutoffs)
