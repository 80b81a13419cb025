"""Human-readable tables for a run's metrics (rich)."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def _f(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def comparison_table(metrics: dict[str, Any]) -> Table:
    table = Table(title="Federated vs centralized vs local-only (pooled test split)")
    for col in ("model", "AUC", "KS", "Brier"):
        table.add_column(col, justify="left" if col == "model" else "right")
    fed = metrics["federated"]
    table.add_row(
        "federated (global model)", _f(fed.get("auc")), _f(fed.get("ks")), _f(fed.get("brier"))
    )
    if "centralized" in metrics:
        c = metrics["centralized"]
        table.add_row("centralized (all rows pooled)", _f(c["auc"]), _f(c["ks"]), _f(c["brier"]))
        if c.get("optimum_auc") is not None:
            table.add_row("centralized, converged optimum", _f(c["optimum_auc"]), "", "")
    if "local_only" in metrics:
        lo = metrics["local_only"]
        table.add_row(
            "local-only (mean over institutions)",
            _f(lo["mean_auc"]),
            _f(lo["mean_ks"]),
            _f(lo["mean_brier"]),
        )
    return table


def institution_table(metrics: dict[str, Any]) -> Table:
    table = Table(title="Per institution: AUC on its own test split")
    method = (metrics.get("personalization") or {}).get("method")
    personalised = f"personalised ({method})" if method else "personalised"
    for col in ("institution", "test rows", "local-only", "global", personalised):
        table.add_column(col, justify="left" if col == "institution" else "right")
    for inst, row in metrics["per_institution"].items():
        table.add_row(
            inst,
            str(row["n_test"]),
            _f(row.get("auc_local_only")),
            _f(row.get("auc")),
            _f(row.get("auc_personalized")),
        )
    return table


def privacy_line(privacy: dict[str, Any]) -> str:
    """One line on what the privacy setting spent (and who stopped for lack of budget)."""
    setting = privacy["setting"]
    mia = (
        f"; membership inference AUC {privacy['mia_auc']:.3f}, TPR at 1% FPR "
        f"{privacy['mia_tpr_at_1pct_fpr']:.3f}"
        if privacy.get("mia_auc") is not None
        else ""
    )
    if setting == "dp-institution":
        dp = privacy["institution_dp"]
        return (
            f"Privacy: dp-institution (clipped by the {dp['clipping']} at "
            f"{dp['clipping_norm']:g}, noise multiplier {dp['noise_multiplier']:.3g}), budget "
            f"epsilon {privacy['epsilon']:g} at delta {privacy['delta']:g} for the federation; "
            f"spent {_f(privacy['epsilon_spent'])}"
            + (
                f"; stopped after round {privacy['stopped']['after_round']}"
                if "stopped" in privacy
                else ""
            )
            + mia
        )
    if setting == "secagg":
        sa = privacy["secagg"]
        return (
            f"Privacy: secagg (Flower SecAgg+: {sa['num_shares']} shares per key, "
            f"{sa['reconstruction_threshold']} rebuild one; the coordinator saw only sums)" + mia
        )
    if setting != "dp-record":
        return f"Privacy: {setting}{mia}"
    if privacy["epsilon"] is None:
        line = "Privacy: dp-record with clipping only (epsilon = inf: no noise, no guarantee)"
    else:
        line = (
            f"Privacy: dp-record, budget epsilon {privacy['epsilon']:g} at delta "
            f"{privacy['delta']:g} per institution; spent at most {_f(privacy['epsilon_spent'])}"
        )
    exhausted = privacy.get("record_dp", {}).get("budget_exhausted_round", {})
    if exhausted:
        who = ", ".join(f"{i} (round {r})" for i, r in exhausted.items())
        line += f"; budget reached by {who}"
    if "stopped" in privacy:
        line += f"; training stopped after round {privacy['stopped']['after_round']}"
    return line + mia
