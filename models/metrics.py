"""Discrimination and calibration metrics (scikit-learn): AUC, KS, Brier."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import auc, brier_score_loss, roc_curve

from jointcredit.federation.metrics import Scores


def risk_metrics(y: np.ndarray, pd_: np.ndarray) -> Scores:
    """AUC and KS are undefined (None) when `y` holds a single class; Brier always exists."""
    y = np.asarray(y)
    brier = float(brier_score_loss(y, pd_, pos_label=1))
    if len(np.unique(y)) < 2:
        return Scores(auc=None, ks=None, brier=brier)
    fpr, tpr, _ = roc_curve(y, pd_)
    # The area under this curve is roc_auc_score's own computation (without a second curve).
    # KS (Kolmogorov-Smirnov): the largest gap between the two classes' score distributions.
    return Scores(auc=float(auc(fpr, tpr)), ks=float(np.max(tpr - fpr)), brier=brier)
