"""Empirical membership-inference audit: how well can an attacker tell a training row from a
row the model never saw? Epsilon is an upper bound; this is a measured lower bound on leakage.

Two attacks on the final model, each reported as ROC AUC and as the true-positive rate at a
1 % false-positive rate whose threshold is calibrated on held-out non-members (so the reported
FPR is observed, not assumed):
- loss threshold (Yeom et al. 2018): a row whose loss is unusually low is called a member;
- offline likelihood ratio (LiRA, Carlini et al. 2022): reference models trained on random
  halves of the population, none of which contains the row, give that row's own distribution
  of confidence; a member's confidence under the audited model sits above it. It calibrates
  for how easy each row is, which is what makes it far stronger at low FPR.
Written here because no maintained library does this for torch tabular models offline
(ML Privacy Meter targets its own training pipelines).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

TARGET_FPR = 0.01
_EPS = 1e-7


@dataclass(frozen=True)
class AttackResult:
    attack: str
    auc: float
    tpr_at_1pct_fpr: float  # at the threshold calibrated on held-out non-members
    fpr_observed: float  # the FPR that threshold gives on the evaluation non-members
    n_members: int
    n_nonmembers: int

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def true_label_logit(pd: np.ndarray, y: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) of the probability the model gives the row's true label (LiRA's
    statistic: near Gaussian across models, unlike the raw probability)."""
    p_true = np.where(y == 1, pd, 1.0 - pd)
    p_true = np.clip(p_true, _EPS, 1 - _EPS)
    out: np.ndarray = np.log(p_true) - np.log1p(-p_true)
    return out


def row_loss(pd: np.ndarray, y: np.ndarray) -> np.ndarray:
    p_true = np.clip(np.where(y == 1, pd, 1.0 - pd), _EPS, 1.0)
    out: np.ndarray = -np.log(p_true)
    return out


def score_attack(
    name: str,
    member_scores: np.ndarray,
    nonmember_scores: np.ndarray,
    *,
    seed: int,
    target_fpr: float = TARGET_FPR,
) -> AttackResult:
    """Scores: higher means "member". Non-members are split in two: one half sets the
    threshold at `target_fpr`, the other (with the members) measures AUC, TPR and FPR."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(nonmember_scores))
    calib = nonmember_scores[order[: len(order) // 2]]
    held = nonmember_scores[order[len(order) // 2 :]]
    if len(calib) == 0 or len(held) == 0 or len(member_scores) == 0:
        raise ValueError("need members and at least two non-members")
    threshold = float(np.quantile(calib, 1.0 - target_fpr, method="higher"))
    labels = np.r_[np.ones(len(member_scores)), np.zeros(len(held))]
    scores = np.r_[member_scores, held]
    return AttackResult(
        attack=name,
        auc=float(roc_auc_score(labels, scores)),
        tpr_at_1pct_fpr=float(np.mean(member_scores > threshold)),
        fpr_observed=float(np.mean(held > threshold)),
        n_members=len(member_scores),
        n_nonmembers=len(held),
    )


def roc_tpr_at(labels: np.ndarray, scores: np.ndarray, fpr: float = TARGET_FPR) -> float:
    """TPR at `fpr` read off the ROC curve itself (uncalibrated; for comparison)."""
    fprs, tprs, _ = roc_curve(labels, scores)
    return float(np.interp(fpr, fprs, tprs))


def loss_threshold(
    pd_members: np.ndarray,
    y_members: np.ndarray,
    pd_nonmembers: np.ndarray,
    y_nonmembers: np.ndarray,
    *,
    seed: int,
) -> AttackResult:
    return score_attack(
        "loss-threshold",
        -row_loss(pd_members, y_members),
        -row_loss(pd_nonmembers, y_nonmembers),
        seed=seed,
    )


# Trains a reference model on the given rows and returns its PD for every row of the audit.
ReferenceTrainer = Callable[[np.ndarray], np.ndarray]


def lira_offline(
    pd_target: np.ndarray,
    y: np.ndarray,
    is_member: np.ndarray,
    train_reference: ReferenceTrainer,
    *,
    references: int,
    seed: int,
) -> AttackResult:
    """Offline LiRA over audit rows (members and non-members of the audited model together).

    Each reference model trains on a random half of the audit rows (`train_reference` gets
    the boolean mask of its rows); a row's OUT distribution comes from the references that did
    not see it, with the variance pooled across rows (few references: per-row variances are
    too noisy, as the LiRA paper notes). Score: how many OUT standard deviations the audited
    model's confidence lies above the row's OUT mean."""
    if references < 2:
        raise ValueError("LiRA needs at least 2 reference models")
    rng = np.random.default_rng(seed)
    n = len(y)
    phi = true_label_logit(pd_target, y)
    out_sum = np.zeros(n)
    out_sq = np.zeros(n)
    out_n = np.zeros(n)
    for _ in range(references):
        inside = rng.random(n) < 0.5
        ref_phi = true_label_logit(train_reference(inside), y)
        out = ~inside
        out_sum[out] += ref_phi[out]
        out_sq[out] += ref_phi[out] ** 2
        out_n[out] += 1
    seen = out_n > 0
    mean = np.where(seen, out_sum / np.maximum(out_n, 1), 0.0)
    resid = (out_sq - out_n * mean**2)[seen].sum()
    dof = max(1.0, float((out_n[seen] - 1).clip(min=0).sum()))
    std = float(np.sqrt(max(resid / dof, _EPS)))
    score = np.where(seen, (phi - mean) / std, -np.inf)
    keep = seen  # a row every reference saw has no OUT distribution (rare: 2^-references)
    return score_attack(
        f"lira-offline ({references} reference models)",
        score[keep & is_member],
        score[keep & ~is_member],
        seed=seed,
    )
