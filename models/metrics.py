"""Discrimination and calibration metrics (scikit-learn): AUC, KS, Brier."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import brier_score_loss, roc_auc_score, roc_curve


def risk_metrics(y: np.ndarray, pd_: np.ndarray) -> dict[str, float | None]:
    """AUC and KS are undefined (None) when `y` holds a single class; Brier always exists."""
    y = np.asarray(y)
    out: dict[str, float | None] = {"brier": float(brier_score_loss(y, pd_, pos_label=1))}
    if len(np.unique(y)) < 2:
        out.update(auc=None, ks=None)
        return out
    fpr, tpr, _ = roc_curve(y, pd_)
    out["auc"] = float(roc_auc_score(y, pd_))
    out["ks"] = float(np.max(tpr - fpr))  # Kolmogorov-Smirnov: max gap between class CDFs
    return out
