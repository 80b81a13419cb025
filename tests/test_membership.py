"""The membership-inference audit: it must find leakage where there is some (an overfit
model), report chance where there is none, and hold its false-positive rate."""

from __future__ import annotations

import numpy as np
import torch

from jointcredit.models.learners import architecture, build_model
from jointcredit.models.training import TrainConfig, predict_pd, train
from jointcredit.privacy.membership import lira_offline, loss_threshold, roc_tpr_at


def _rows(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (rng.random(n) < 1 / (1 + np.exp(-x[:, 0]))).astype(np.int64)
    return x, y


def _overfit(x: np.ndarray, y: np.ndarray, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(architecture("mlp", x.shape[1]), seed=seed)
    train(model, x, y, TrainConfig(epochs=150, batch_size=64, learning_rate=0.003, seed=seed))
    return model


def test_no_leakage_reads_as_chance() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    y_m, y_n = rng.integers(0, 2, n), rng.integers(0, 2, n)
    pd_m, pd_n = rng.random(n), rng.random(n)  # the model ignores membership entirely
    result = loss_threshold(pd_m, y_m, pd_n, y_n, seed=1)
    assert abs(result.auc - 0.5) < 0.03
    assert result.tpr_at_1pct_fpr < 0.03 and result.fpr_observed < 0.03
    assert result.n_members == n and result.n_nonmembers == n // 2


def test_overfit_model_is_caught_by_both_attacks() -> None:
    """An MLP trained 150 epochs on 300 rows of 30 noisy features memorises its rows; both
    attacks must see it, and LiRA (per-row calibration) must do at least as well at 1% FPR."""
    x, y = _rows(600, 30, seed=3)
    members = np.zeros(600, dtype=bool)
    members[:300] = True
    target = _overfit(x[members], y[members], seed=0)
    pd_all = predict_pd(target, x)
    loss = loss_threshold(pd_all[members], y[members], pd_all[~members], y[~members], seed=0)
    assert loss.auc > 0.7

    seeds = iter(range(100, 110))

    def reference(inside: np.ndarray) -> np.ndarray:
        return predict_pd(_overfit(x[inside], y[inside], seed=next(seeds)), x)

    lira = lira_offline(pd_all, y, members, reference, references=6, seed=0)
    assert lira.auc > 0.75
    assert lira.tpr_at_1pct_fpr >= loss.tpr_at_1pct_fpr
    assert lira.tpr_at_1pct_fpr > 0.05


def test_roc_tpr_reads_the_curve() -> None:
    labels = np.r_[np.ones(100), np.zeros(100)]
    scores = np.r_[np.linspace(1, 2, 100), np.linspace(0, 1, 100)]  # perfectly separated
    assert roc_tpr_at(labels, scores) == 1.0
