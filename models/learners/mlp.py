"""A small MLP (two ReLU layers): one logit of default per row.

Reasons by integrated gradients (Sundararajan et al., 2017) from the portfolio-average
applicant (the all-zero input row), midpoint rule, every row's path points in one autograd
pass; the pushes add up to logit(x) - logit(average) up to the discretisation error. Written
here rather than taken from Captum, which would bring plotting libraries into the service for a
few lines of torch.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from jointcredit.models.learners.base import Architecture, FeatureColumns, Learner, grouping

HIDDEN = (128, 64)


class MLP(nn.Module):
    def __init__(self, n_features: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x).squeeze(-1)
        return out


class GradientKernel:
    def __init__(self, model: nn.Module, columns: list[FeatureColumns], steps: int = 32) -> None:
        self.model = model.eval()
        self.g = grouping(columns)
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


class MLPLearner(Learner):
    kind = "mlp"

    def architecture(self, n_features: int) -> Architecture:
        return Architecture(kind=self.kind, n_features=n_features, hidden=HIDDEN)

    def module(self, arch: Architecture) -> nn.Module:
        return MLP(arch.n_features, arch.hidden)

    def kernel(
        self, model: nn.Module, columns: list[FeatureColumns], reference: np.ndarray | None = None
    ) -> GradientKernel:
        return GradientKernel(model, columns)
