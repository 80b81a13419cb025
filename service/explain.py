"""Why a score is what it is: each model feature's push toward default, in log-odds.

The reference point is the portfolio-average applicant: the agreed preprocessing centres every
numeric column on the federation's mean and every one-hot column on the federation's level
frequency, so an all-zero input row is that average applicant.

- Logistic scorecard: exact. A feature's contribution is the sum of weight x input over its
  columns; contributions add up to the logit minus the intercept.
- MLP: integrated gradients (Sundararajan et al., 2017) from the all-zero row, midpoint rule
  with `steps` points; contributions add up to logit(x) - logit(average) up to the
  discretisation error. Written here rather than taken from Captum: Captum would add
  matplotlib and more to the service's dependencies for twenty lines of torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from jointcredit.models.preprocessing import NumericFeature, PreprocessingSpec


@dataclass(frozen=True)
class FeatureColumns:
    name: str
    start: int
    stop: int


def feature_columns(spec: PreprocessingSpec) -> list[FeatureColumns]:
    out: list[FeatureColumns] = []
    start = 0
    for f in spec.features:
        width = (2 if f.impute else 1) if isinstance(f, NumericFeature) else len(f.levels)
        out.append(FeatureColumns(f.name, start, start + width))
        start += width
    if start != spec.n_outputs:
        raise ValueError(f"feature columns cover {start} of {spec.n_outputs} model inputs")
    return out


def _group(per_column: np.ndarray, columns: list[FeatureColumns]) -> np.ndarray:
    return np.stack([per_column[:, c.start : c.stop].sum(axis=1) for c in columns], axis=1)


def attributions(
    model: nn.Module, kind: str, x: np.ndarray, columns: list[FeatureColumns], steps: int = 32
) -> np.ndarray:
    """(rows, features) contributions to the logit of default."""
    if kind == "logreg":
        weight = next(p for n, p in model.named_parameters() if n.endswith("weight"))
        w = weight.detach().numpy().reshape(-1)
        return _group(x * w[None, :], columns)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    total = torch.zeros_like(xt)
    model.eval()
    for a in alphas:
        point = (a * xt).requires_grad_(True)
        out = model(point).sum()
        (grad,) = torch.autograd.grad(out, point)
        total += grad
    return _group((xt * total / steps).numpy(), columns)
