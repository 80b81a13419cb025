"""The shared risk models: a logistic-regression scorecard and a small MLP (torch).

Both output one logit per row (log-odds of default). The architecture is described by a small
pydantic model stored in the artifact, so a model can be rebuilt without training code.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

ModelKind = Literal["logreg", "mlp"]


class Architecture(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: ModelKind
    n_features: int
    hidden: tuple[int, ...] = ()


def architecture(kind: ModelKind, n_features: int) -> Architecture:
    return Architecture(kind=kind, n_features=n_features, hidden=(128, 64) if kind == "mlp" else ())


class LogisticScorecard(nn.Module):
    """Logit = w . x + b: each weight times a standardised feature is an exact contribution."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(x).squeeze(-1)
        return out


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


def build_model(arch: Architecture, *, seed: int = 0) -> nn.Module:
    """A freshly initialised model; the seed makes the initial global weights reproducible."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        if arch.kind == "logreg":
            return LogisticScorecard(arch.n_features)
        return MLP(arch.n_features, arch.hidden)
    finally:
        torch.random.set_rng_state(gen_state)
