"""Scoring kernels: probability of default and why, each model feature's push toward default
in log-odds, for a batch of preprocessed rows.

The reference point is the portfolio-average applicant: the agreed preprocessing centres every
numeric column on the federation's mean and every one-hot column on the federation's level
frequency, so an all-zero input row is that average applicant.

- Logistic scorecard (`LinearKernel`): exact. A feature's contribution is the sum of weight x
  input over its columns; contributions add up to the logit minus the intercept. Plain numpy
  in float64: torch's per-call overhead was a large share of a single decision's cost for what
  is one dot product.
- MLP (`GradientKernel`): integrated gradients (Sundararajan et al., 2017) from the all-zero
  row, midpoint rule with `steps` points, every row's points in one autograd pass;
  contributions add up to logit(x) - logit(average) up to the discretisation error. Written
  here rather than taken from Captum: Captum would add matplotlib and more to the service's
  dependencies for a few lines of torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

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


def _grouping(columns: list[FeatureColumns]) -> np.ndarray:
    """(model inputs, features) 0/1 matrix: per-column values @ it = per-feature sums."""
    g = np.zeros((columns[-1].stop if columns else 0, len(columns)))
    for j, c in enumerate(columns):
        g[c.start : c.stop, j] = 1.0
    return g


class Kernel(Protocol):
    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows, inputs) float32 -> PD per row (float64), (rows, features) contributions."""
        ...


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow warning for large |z|
    return out


class LinearKernel:
    def __init__(self, model: nn.Module, columns: list[FeatureColumns]) -> None:
        params = dict(model.named_parameters())
        weight = next(p for n, p in params.items() if n.endswith("weight"))
        bias = next(p for n, p in params.items() if n.endswith("bias"))
        self.w = weight.detach().double().numpy().reshape(-1)
        self.b = float(bias.detach().double().reshape(-1)[0])
        self.g = _grouping(columns)

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        per_column = x.astype(np.float64) * self.w
        return _sigmoid(per_column.sum(axis=1) + self.b), per_column @ self.g


class GradientKernel:
    def __init__(self, model: nn.Module, columns: list[FeatureColumns], steps: int = 32) -> None:
        self.model = model.eval()
        self.g = _grouping(columns)
        self.alphas = ((torch.arange(steps, dtype=torch.float32) + 0.5) / steps).view(1, -1, 1)

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        with torch.no_grad():
            pd_ = torch.sigmoid(self.model(xt)).double().numpy()
        rows, steps = xt.shape[0], self.alphas.shape[1]
        contrib = np.zeros((rows, self.g.shape[1]))
        chunk = max(1, 65536 // steps)  # bounded memory for large batches
        for i in range(0, rows, chunk):
            part = xt[i : i + chunk]
            points = (self.alphas * part[:, None, :]).requires_grad_(True)
            (grad,) = torch.autograd.grad(self.model(points).sum(), points)
            mean_grad = grad.mean(dim=1)  # midpoint rule: the average gradient on the path
            contrib[i : i + chunk] = (part * mean_grad).double().numpy() @ self.g
        return pd_, contrib


def kernel(model: nn.Module, kind: str, columns: list[FeatureColumns]) -> Kernel:
    if kind == "logreg":
        return LinearKernel(model, columns)
    return GradientKernel(model, columns)
