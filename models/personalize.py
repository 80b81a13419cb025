"""Personalisation: each institution adapts the global model to its own borrowers.

Ditto-style (Li et al., 2021): fine-tune on own rows with a proximal pull toward the global
weights, `loss + (mu / 2) * ||w - w_global||^2`. A strong pull keeps the global model's
knowledge (what small lenders need), a weak one lets a large lender fit its own book. The
institution picks mu on a validation split of its own training rows, with the unchanged
global model as a candidate too, so personalisation never knowingly makes things worse.
Hand-written because Flower ships no personalisation step; the candidates train side by side
(`train_together`): for the logistic scorecard four strengths cost about what one did.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from jointcredit.models.metrics import risk_metrics
from jointcredit.models.training import TrainConfig, predict_pd, train_together

DEFAULT_MUS = (1.0, 0.1, 0.01, 0.0)


@dataclass(frozen=True)
class Personalized:
    model: nn.Module
    mu: float | None  # None: the global model itself won on validation
    validation_auc: float | None


def _fine_tune(
    models: list[nn.Module],
    mus: Sequence[float],
    x: np.ndarray,
    y: np.ndarray,
    cfg: TrainConfig,
    anchor: list[torch.Tensor],
) -> None:
    """`cfg.epochs` passes with the learning rate decaying linearly, so the result settles
    instead of ending on a full-size noisy step; the candidates are trained side by side."""
    for e in range(cfg.epochs):
        lr = cfg.learning_rate * (1 - e / cfg.epochs)
        step = replace(cfg, epochs=1, steps=0, learning_rate=lr, seed=cfg.seed + e)
        train_together(models, x, y, step, mus, anchor)


def _auc(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    auc = risk_metrics(y, predict_pd(model, x))["auc"]
    return -1.0 if auc is None else auc


def personalize(
    global_model: nn.Module,
    fit: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    cfg: TrainConfig,
    mus: tuple[float, ...] = DEFAULT_MUS,
) -> Personalized:
    """Choose mu on `validation`, then refit with it on fit + validation rows."""
    x_val, y_val = validation
    anchor = [p.detach().clone() for p in global_model.parameters()]
    best = Personalized(global_model, None, _auc(global_model, x_val, y_val))
    candidates = [copy.deepcopy(global_model) for _ in mus]
    _fine_tune(candidates, mus, fit[0], fit[1], cfg, anchor)
    for mu, candidate in zip(mus, candidates, strict=True):
        # Strongest pull first: on ties the model closer to the global one wins.
        auc = _auc(candidate, x_val, y_val)
        if best.validation_auc is None or auc > best.validation_auc:
            best = Personalized(candidate, mu, auc)
    if best.mu is None:
        return best
    # The choice is made; now use every own training row for the final personal model.
    final = copy.deepcopy(global_model)
    x_all, y_all = np.concatenate([fit[0], x_val]), np.concatenate([fit[1], y_val])
    _fine_tune([final], [best.mu], x_all, y_all, cfg, anchor)
    return Personalized(final, best.mu, best.validation_auc)
