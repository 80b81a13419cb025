"""Local training and prediction, shared by federated clients and the baselines.

One loop for everything (federated round, fine-tuning, centralized and local-only baselines) so
that baselines differ from federation only in which rows they see.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from jointcredit.federation.choices import Optimizer
from jointcredit.federation.settings import RunSettings


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 1
    batch_size: int = 128
    learning_rate: float = 0.01
    proximal_mu: float = 0.0  # FedProx: the client adds (mu / 2) * ||w - w_global||^2 itself
    seed: int = 0
    optimizer: Optimizer = "adam"
    steps: int = 0  # > 0: exactly this many minibatch steps instead of `epochs` full passes

    @classmethod
    def from_settings(
        cls,
        settings: RunSettings,
        *,
        seed: int,
        server_round: int | None = None,
        epochs: int | None = None,
        mu: float = 0.0,
    ) -> TrainConfig:
        """Local training of round `server_round` (None: the base learning rate, full
        epochs)."""
        return cls(
            epochs=settings.local_epochs if epochs is None else epochs,
            steps=settings.local_steps if epochs is None and server_round is not None else 0,
            batch_size=settings.batch_size,
            learning_rate=settings.lr_at(server_round) if server_round else settings.learning_rate,
            proximal_mu=mu,
            seed=seed,
            optimizer=settings.optimizer,
        )


@dataclass
class DriftControl:
    """SCAFFOLD's control variates for one local round (Karimireddy et al., 2020, with Adam
    as the local optimiser): `correction` (c - c_i, the federation's mean gradient minus this
    institution's, both from the previous round) is added to every minibatch gradient, so
    local steps follow the federation's objective instead of drifting toward the
    institution's own. `train` fills `mean_gradient` with this round's mean minibatch gradient
    of the loss alone: the institution's next c_i."""

    correction: list[torch.Tensor]
    mean_gradient: list[torch.Tensor] | None = None


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    return optimizer_for(list(model.parameters()), cfg)


def optimizer_for(params: Sequence[torch.Tensor], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.learning_rate)
    return torch.optim.Adam(params, lr=cfg.learning_rate)


def _batches(n: int, cfg: TrainConfig, gen: torch.Generator) -> list[list[torch.Tensor]]:
    """Minibatch indices grouped by pass; with `steps`, passes repeat until the count is met."""
    passes: list[list[torch.Tensor]] = []
    remaining = cfg.steps
    while True:
        order = torch.randperm(n, generator=gen)
        chunks = list(torch.split(order, cfg.batch_size))
        if cfg.steps > 0:
            chunks = chunks[:remaining]
            remaining -= len(chunks)
        passes.append(chunks)
        if (cfg.steps > 0 and remaining <= 0) or (cfg.steps == 0 and len(passes) >= cfg.epochs):
            return passes


def train(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    cfg: TrainConfig,
    *,
    global_params: list[torch.Tensor] | None = None,
    control: DriftControl | None = None,
) -> float:
    """Minimise binary cross-entropy; returns the mean loss of the last pass."""
    if len(y) == 0:
        raise ValueError("no training rows")
    gen = torch.Generator().manual_seed(cfg.seed)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(y, dtype=np.float32))
    opt = _optimizer(model, cfg)
    loss_fn = nn.BCEWithLogitsLoss()
    anchor = [p.detach().clone() for p in global_params] if global_params else None
    params = list(model.parameters())
    if control is not None and len(control.correction) != len(params):
        raise ValueError(
            f"drift correction has {len(control.correction)} tensors, the model {len(params)}"
        )
    if control is not None and anchor is not None and cfg.proximal_mu > 0:
        raise ValueError("a drift correction and a proximal term do not go together")
    gradient_sums = [torch.zeros_like(p) for p in params] if control is not None else []
    steps = 0
    model.train()
    last = 0.0
    for batches in _batches(len(yt), cfg, gen):
        total, seen = 0.0, 0
        for idx in batches:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xt[idx]), yt[idx])
            if anchor is not None and cfg.proximal_mu > 0:
                prox = sum(
                    torch.sum((p - a) ** 2) for p, a in zip(model.parameters(), anchor, strict=True)
                )
                loss = loss + 0.5 * cfg.proximal_mu * prox
            loss.backward()
            if control is not None:
                for p, s, c in zip(params, gradient_sums, control.correction, strict=True):
                    assert p.grad is not None
                    s.add_(p.grad)
                    p.grad.add_(c)
                steps += 1
            opt.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        last = total / seen
    if control is not None:
        control.mean_gradient = [s / max(steps, 1) for s in gradient_sums]
    return last


def train_together(
    models: Sequence[nn.Module],
    x: np.ndarray,
    y: np.ndarray,
    cfg: TrainConfig,
    mus: Sequence[float],
    anchor: list[torch.Tensor],
) -> None:
    """`train` of every model in `models` (same architecture) with its own proximal strength
    `mus[k]` toward `anchor`, all stepped together: the same minibatches, the same optimiser
    rule, each model's gradient its own. Stacked with torch.func (PyTorch's model-ensembling
    recipe), so K models cost little more than one when, as here, a step is mostly
    per-operation overhead. Equal to K separate `train` calls up to float rounding (tested)."""
    if len(y) == 0:
        raise ValueError("no training rows")
    if len(models) != len(mus):
        raise ValueError(f"{len(models)} models but {len(mus)} proximal strengths")
    params, buffers = stack_module_state(list(models))
    skeleton = copy.deepcopy(models[0]).to("meta")

    Tensors = dict[str, torch.Tensor]

    def one(p: Tensors, b: Tensors, xb: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = functional_call(skeleton, (p, b), (xb,))
        return out

    forward = torch.vmap(one, in_dims=(0, 0, None))
    names = [n for n, _ in models[0].named_parameters()]
    anchors = dict(zip(names, (a.detach() for a in anchor), strict=True))
    mu = torch.tensor(list(mus), dtype=torch.float32)
    gen = torch.Generator().manual_seed(cfg.seed)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(y, dtype=np.float32))
    opt = optimizer_for(list(params.values()), cfg)
    loss_fn = nn.BCEWithLogitsLoss(reduction="none")
    with_prox = bool((mu > 0).any())
    for batches in _batches(len(yt), cfg, gen):
        for idx in batches:
            opt.zero_grad(set_to_none=True)
            per_row = loss_fn(forward(params, buffers, xt[idx]), yt[idx].expand(len(mus), -1))
            loss = per_row.mean(dim=1)
            if with_prox:
                prox = sum(((params[n] - anchors[n]) ** 2).flatten(1).sum(dim=1) for n in names)
                loss = loss + 0.5 * mu * prox
            loss.sum().backward()  # the models share no parameters: each gradient is its own
            opt.step()
    for k, model in enumerate(models):
        model.load_state_dict({n: t[k].detach().clone() for n, t in (params | buffers).items()})


@torch.no_grad()
def predict_pd(model: nn.Module, x: np.ndarray, *, batch_size: int = 65536) -> np.ndarray:
    """Probability of default per row (float64)."""
    model.eval()
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    out = [torch.sigmoid(model(xt[i : i + batch_size])) for i in range(0, len(xt), batch_size)]
    return torch.cat(out).double().numpy() if out else np.zeros(0)
