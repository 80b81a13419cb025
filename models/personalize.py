"""Personalisation: each institution adapts the global model to its own borrowers.

Two methods. `hierarchical` (the logistic scorecard's default when no privacy setting or
robust rule is on): an empirical-Bayes prior per coefficient. The federation learns how far
lenders' own fits stray from the global model, coefficient by coefficient (`prior_deviation`:
each institution's squared deviations, summed by the coordinator); each institution then
takes the exact posterior mode of its own rows under the prior N(w_global, tau^2), tau^2 the
other institutions' mean squared deviation (`personalize_hierarchical`). Coefficients on which
lenders agree are pulled hard, those on which they differ barely; a large
lender's own rows outweigh any prior, a small one leans on the federation. No validation split
and nothing tuned, so nothing is chosen on noise (how it compares with Ditto and local-only:
docs/PERSONALISATION.md). Converged with L-BFGS in float64, which only the convex scorecard
allows; hand-written because no library fits a logistic model under a Gaussian prior centred
away from zero.

`ditto` (the MLP's, and everyone's under DP, SecAgg+ or a robust rule, where the coordinator
must not see per-institution deviations; Li et al., 2021): fine-tune on own rows with a
proximal pull toward the global weights, `loss + (mu / 2) * ||w - w_global||^2`. A strong
pull keeps the global model's knowledge (what small lenders need), a weak one lets a large
lender fit its own book. The institution picks mu on a validation split of its own training
rows, with the unchanged global model as a candidate too, then refits on all its rows.
Hand-written because Flower ships no personalisation step; the candidates train side by side
(`train_together`), so trying several strengths costs little more than one.
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
# The pull of the deviation fits toward the global model, on the mean loss: negligible for
# coefficients a lender's rows determine, but it keeps those of levels it sees rarely or
# never near the global value instead of drifting (their deviation would say nothing).
DEVIATION_PULL = 1e-3
# Smallest prior variance per coefficient: a coefficient every lender agrees on exactly still
# moves a little for a lender whose rows insist.
MIN_PRIOR_VARIANCE = 1e-4


@dataclass(frozen=True)
class Personalized:
    model: nn.Module
    mu: float | None  # Ditto's chosen strength; None: the global model won, or hierarchical
    validation_auc: float | None
    method: str = "ditto"  # "ditto", "hierarchical" or "global"


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
    auc = risk_metrics(y, predict_pd(model, x)).auc
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
    best = Personalized(global_model, None, _auc(global_model, x_val, y_val), "global")
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


def map_fit(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    center: list[torch.Tensor],
    precision: list[torch.Tensor],
) -> nn.Module:
    """A copy of `model` at the exact minimum of its mean log-loss on (x, y) plus
    `sum(precision / 2 * (w - center) ** 2)`: the posterior mode under a Gaussian prior.
    Float64 L-BFGS from the center; only meaningful for a convex (logistic) model."""
    fitted = copy.deepcopy(model).double()
    params = list(fitted.parameters())
    centers = [c.detach().double() for c in center]
    precisions = [p.detach().double() for p in precision]
    xt = torch.from_numpy(np.asarray(x, dtype=np.float64))
    yt = torch.from_numpy(np.asarray(y, dtype=np.float64))
    with torch.no_grad():
        for p, c in zip(params, centers, strict=True):
            p.copy_(c)
    # The gradient tolerance is on the mean loss: tighter costs evaluations without moving the
    # fitted scorecard's ranking (docs/PERSONALISATION.md).
    opt = torch.optim.LBFGS(
        params,
        max_iter=500,
        tolerance_grad=1e-6,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(fitted(xt), yt)
        for p, c, k in zip(params, centers, precisions, strict=True):
            loss = loss + 0.5 * torch.sum(k * (p - c) ** 2)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    for _ in range(5):  # step() stops at max_iter or a tolerance; a converged one returns at once
        opt.step(closure)  # type: ignore[no-untyped-call]
    return fitted.float()


def prior_deviation(global_model: nn.Module, x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """Per parameter, (own fit - global)^2: what this institution contributes to the
    federation's estimate of how much lenders differ. Its own fit is pulled weakly toward the
    global model (`DEVIATION_PULL`)."""
    anchor = [p.detach() for p in global_model.parameters()]
    pull = [torch.full_like(a, DEVIATION_PULL) for a in anchor]
    own = map_fit(global_model, x, y, anchor, pull)
    return [
        ((p.detach() - a).double() ** 2).numpy()
        for p, a in zip(own.parameters(), anchor, strict=True)
    ]


def personalize_hierarchical(
    global_model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    others_total: list[np.ndarray],
    others: int,
) -> Personalized:
    """The posterior mode of own rows (all of them) under the prior N(w_global, tau^2), with
    tau^2 the mean squared deviation of the `others` other institutions (their sum
    `others_total`). The loss is a mean over rows, so the prior's precision is 1 / (n tau^2)."""
    if others < 1:
        raise ValueError("a hierarchical prior needs at least one other institution")
    anchor = [p.detach() for p in global_model.parameters()]
    if [t.shape for t in others_total] != [tuple(a.shape) for a in anchor]:
        raise ValueError("the deviation totals do not match the model's parameters")
    precision = [
        torch.from_numpy(1.0 / (len(y) * np.maximum(t / others, MIN_PRIOR_VARIANCE)))
        for t in others_total
    ]
    return Personalized(map_fit(global_model, x, y, anchor, precision), None, None, "hierarchical")
