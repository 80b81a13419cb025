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
    for col in ("institution", "test rows", "local-only", "global", "personalised"):
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
