"""Human-readable tables for a run's metrics (rich)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from jointcredit.federation.fairness import Fairness
from jointcredit.federation.metrics import Privacy, RunMetrics

FOUR_FIFTHS = 0.8


def _f(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def comparison_table(metrics: RunMetrics) -> Table:
    split = ", out of time" if metrics.config.get("split") == "time" else ""
    table = Table(title=f"Federated vs centralized vs local-only (pooled test split{split})")
    for col in ("model", "AUC", "KS", "Brier"):
        table.add_column(col, overflow="fold", justify="left" if col == "model" else "right")
    fed = metrics.federated
    table.add_row("federated (global model)", _f(fed.auc), _f(fed.ks), _f(fed.brier))
    c = metrics.centralized
    if c is not None:
        trees = c.same_bins_auc is not None  # gbdt: the pooled reference is XGBoost's
        pooled = "centralized (XGBoost hist, pooled)" if trees else "centralized (all rows pooled)"
        table.add_row(pooled, _f(c.auc), _f(c.ks), _f(c.brier))
        if trees:
            table.add_row("centralized, same bins (lossless twin)", _f(c.same_bins_auc), "", "")
        if c.optimum_auc is not None:
            table.add_row("centralized, converged optimum", _f(c.optimum_auc), "", "")
    lo = metrics.local_only
    if lo is not None:
        table.add_row(
            "local-only (mean over institutions)",
            _f(lo.mean_auc),
            _f(lo.mean_ks),
            _f(lo.mean_brier),
        )
    return table


def institution_table(metrics: RunMetrics) -> Table:
    table = Table(title="Per institution: AUC on its own test split")
    method = metrics.personalization.method
    personalised = f"personalised ({method})" if method else "personalised"
    for col in ("institution", "test rows", "local-only", "global", personalised):
        table.add_column(col, overflow="fold", justify="left" if col == "institution" else "right")
    for inst, row in metrics.per_institution.items():
        table.add_row(
            inst,
            str(row.n_test),
            _f(row.auc_local_only),
            _f(row.auc),
            _f(row.auc_personalized),
        )
    return table


def fairness_table(fairness: Fairness, where: str = "the pooled test split") -> Table:
    """Per protected attribute and group: approval rate, adverse impact ratio (flagged below
    the 4/5 rule), approval among repaid applicants, AUC; the attribute's parity gaps."""
    c = fairness.cutoffs
    table = Table(
        title=f"Fairness on {where} (approved: score >= {c.approve}; AIR < 0.80 fails the 4/5 rule)"
    )
    for col in ("attribute", "group", "applicants", "approved", "AIR", "repaid approved", "AUC"):
        table.add_column(col, justify="left" if col in ("attribute", "group") else "right")
    for attribute in fairness.attributes:
        for group, counts in fairness.groups[attribute].items():
            air = fairness.adverse_impact_ratio[attribute][group]
            table.add_row(
                Text(attribute),  # names from data files: never read as markup
                Text(group),
                str(counts.applicants),
                _f(counts.approval_rate),
                _f(air) + (" !" if air is not None and air < FOUR_FIFTHS else ""),
                _f(counts.repaid_approval_rate),
                _f(fairness.auc_by_group[attribute][group]),
            )
        table.add_row(
            Text(attribute),
            "gap",
            "",
            _f(fairness.demographic_parity_difference[attribute]),
            "",
            _f(fairness.equal_opportunity_difference[attribute]),
            "",
            end_section=True,
        )
    return table


def privacy_line(privacy: Privacy) -> str:
    """One line on what the privacy setting spent (and who stopped for lack of budget)."""
    setting = privacy.setting
    mia = (
        f"; membership inference AUC {privacy.mia_auc:.3f}, TPR at 1% FPR "
        f"{privacy.mia_tpr_at_1pct_fpr or 0.0:.3f}"
        if privacy.mia_auc is not None
        else ""
    )
    stopped = privacy.stopped
    if setting == "dp-institution" and privacy.institution_dp is not None:
        dp = privacy.institution_dp
        return (
            f"Privacy: dp-institution (clipped by the {dp.clipping} at "
            f"{dp.clipping_norm:g}, noise multiplier {_f(dp.noise_multiplier)}), budget "
            f"epsilon {_g(privacy.epsilon)} at delta {_g(privacy.delta)} for the federation; "
            f"spent {_f(privacy.epsilon_spent)}"
            + (f"; stopped after round {stopped.after_round}" if stopped else "")
            + mia
        )
    if setting == "secagg" and privacy.secagg is not None:
        sa = privacy.secagg
        return (
            f"Privacy: secagg (Flower SecAgg+: {sa.num_shares} shares per key, "
            f"{sa.reconstruction_threshold} rebuild one; the coordinator saw only sums)" + mia
        )
    if setting != "dp-record":
        return f"Privacy: {setting}{mia}"
    if privacy.epsilon is None:
        line = "Privacy: dp-record with clipping only (epsilon = inf: no noise, no guarantee)"
    else:
        line = (
            f"Privacy: dp-record, budget epsilon {privacy.epsilon:g} at delta "
            f"{_g(privacy.delta)} per institution; spent at most {_f(privacy.epsilon_spent)}"
        )
    exhausted = privacy.record_dp.budget_exhausted_round if privacy.record_dp else {}
    if exhausted:
        who = ", ".join(f"{i} (round {r})" for i, r in exhausted.items())
        line += f"; budget reached by {who}"
    if stopped:
        line += f"; training stopped after round {stopped.after_round}"
    return line + mia


def _g(v: float | None) -> str:
    return "-" if v is None else f"{v:g}"


# `simulate --json`: these sections of metrics.json (the tables' and lines' facts), beside the
# paths of the outputs.
SUMMARY_SECTIONS = (
    "institutions",
    "federated",
    "centralized",
    "local_only",
    "per_institution",
    "personalization",
    "fairness",
    "security",
    "privacy",
    "trained_rounds",
    "timing",
)


def summary_json(metrics: RunMetrics, out: Path) -> dict[str, Any]:
    """What `simulate` prints, as one JSON-ready document: `out`, `model`, `metrics_file`, then
    `SUMMARY_SECTIONS` as metrics.json has them (epsilon = inf as Infinity, as there)."""
    sections = json.loads(
        metrics.model_dump_json(include=set(SUMMARY_SECTIONS), exclude_unset=True)
    )
    paths = {
        "out": str(out),
        "model": str(out / "model"),
        "metrics_file": str(out / "metrics.json"),
    }
    return {**paths, **{k: sections.get(k) for k in SUMMARY_SECTIONS}}
