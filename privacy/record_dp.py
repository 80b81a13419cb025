"""Record-level differential privacy: each borrower's row is protected inside its institution.

DP-SGD with Opacus (per-sample gradient clipping, Gaussian noise, Poisson-sampled minibatches)
replaces plain local training, and every institution keeps its own RDP accountant (Opacus's)
composed over all the rounds it trains. The budget is enforced, not only reported: before a
round, an institution works out how many DP-SGD steps it can still take without its epsilon
passing the target and takes at most that many; at zero it stops contributing updates.

Calibration: by default the noise multiplier is chosen once per institution (Opacus's
`get_noise_multiplier`, from its own sampling rate) so that the planned rounds x steps spend
exactly the target; a fixed `noise-multiplier` instead makes the enforcement stop training
when the budget runs out.

What it covers: the model updates an institution sends (and therefore the final model). Noise
and Poisson sampling draw from the operating system's entropy, never from the run's public
seed (with a known seed the coordinator could regenerate and subtract the noise), so DP runs
are not bit-reproducible. Not covered: the one-off preprocessing summaries (means, variances,
category counts of the training rows) and evaluation metrics on test rows.
"""

from __future__ import annotations

import json
import math
import secrets
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from opacus import GradSampleModule
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
from opacus.accountants.utils import get_noise_multiplier
from opacus.optimizers import DPOptimizer
from torch import nn

from jointcredit.models.training import TrainConfig, optimizer_for

# One (noise multiplier, sampling rate, steps) entry per run of equal steps: Opacus's form.
History = list[tuple[float, float, int]]


@dataclass(frozen=True)
class DPSGDPlan:
    """An institution's DP-SGD parameters for the whole run."""

    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float  # Poisson sampling probability q = expected batch / training rows
    expected_batch_size: int
    steps_per_round: int


def sample_rate(batch_size: int, n_rows: int) -> float:
    if n_rows <= 0:
        raise ValueError("no training rows")
    return min(1.0, batch_size / n_rows)


def calibrate_noise(epsilon: float, delta: float, rate: float, steps: int) -> float:
    """Smallest noise multiplier (to Opacus's tolerance) whose RDP epsilon after `steps`
    Poisson-sampled steps at `rate` stays at or below `epsilon`. Infinite epsilon: no noise."""
    if math.isinf(epsilon):
        return 0.0
    if epsilon <= 0 or not 0 < delta < 1:
        raise ValueError(f"need epsilon > 0 and 0 < delta < 1, got {epsilon}, {delta}")
    if steps <= 0:
        raise ValueError("no steps to calibrate for")
    return float(
        get_noise_multiplier(
            target_epsilon=epsilon,
            target_delta=delta,
            sample_rate=rate,
            steps=steps,
            accountant="rdp",
            epsilon_tolerance=0.005,
        )
    )


def plan(
    *,
    epsilon: float,
    delta: float,
    max_grad_norm: float,
    batch_size: int,
    n_rows: int,
    steps_per_round: int,
    rounds: int,
    noise_multiplier: float = 0.0,
) -> DPSGDPlan:
    """The plan of an institution with `n_rows` training rows; `noise_multiplier` > 0 fixes
    the noise instead of calibrating it to spend `epsilon` over `rounds` x `steps_per_round`."""
    rate = sample_rate(batch_size, n_rows)
    noise = noise_multiplier or calibrate_noise(epsilon, delta, rate, rounds * steps_per_round)
    return DPSGDPlan(
        noise_multiplier=noise,
        max_grad_norm=max_grad_norm,
        sample_rate=rate,
        expected_batch_size=max(1, round(rate * n_rows)),
        steps_per_round=steps_per_round,
    )


class PrivacyLedger:
    """One institution's RDP accountant across rounds (Opacus's `RDPAccountant`), kept as JSON
    in the node's state between rounds."""

    def __init__(self, history: Sequence[tuple[float, float, int]] = ()) -> None:
        self._history: History = [(float(s), float(q), int(k)) for s, q, k in history]

    @property
    def history(self) -> History:
        return list(self._history)

    @property
    def steps(self) -> int:
        return sum(k for _, _, k in self._history)

    def epsilon(self, delta: float) -> float:
        """Epsilon spent so far at `delta` (0 before any step; inf for noiseless steps)."""
        return _epsilon(self._history, delta)

    def epsilon_after(self, plan: DPSGDPlan, steps: int, delta: float) -> float:
        return _epsilon(self._extended(plan, steps), delta)

    def steps_within(self, plan: DPSGDPlan, epsilon: float, delta: float) -> int:
        """The most steps (at most a round's worth) that keep the spent epsilon <= `epsilon`;
        epsilon only grows with steps, so a binary search finds it."""
        if math.isinf(epsilon):
            return plan.steps_per_round
        lo, hi = 0, plan.steps_per_round
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.epsilon_after(plan, mid, delta) <= epsilon:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def record(self, plan: DPSGDPlan, steps: int) -> None:
        self._history = self._extended(plan, steps)

    def _extended(self, plan: DPSGDPlan, steps: int) -> History:
        if steps <= 0:
            return list(self._history)
        entry = (plan.noise_multiplier, plan.sample_rate, steps)
        if self._history and self._history[-1][:2] == entry[:2]:  # merge like Opacus does
            s, q, k = self._history[-1]
            return [*self._history[:-1], (s, q, k + steps)]
        return [*self._history, entry]

    def to_json(self) -> str:
        return json.dumps(self._history)

    @classmethod
    def from_json(cls, text: str) -> PrivacyLedger:
        return cls([(float(s), float(q), int(k)) for s, q, k in json.loads(text)])


@lru_cache(maxsize=256)
def _rdp_per_step(noise: float, rate: float) -> tuple[float, ...]:
    """Opacus's RDP of one Poisson-sampled Gaussian step at its default orders. RDP composes
    additively, so k steps cost k times this. Computed once per (noise, rate) because the
    budget search asks for epsilon many times per round and the series over Opacus's
    fractional orders is slow at small noise."""
    orders = RDPAccountant.DEFAULT_ALPHAS
    return tuple(np.atleast_1d(compute_rdp(q=rate, noise_multiplier=noise, steps=1, orders=orders)))


def _epsilon(history: History, delta: float) -> float:
    """What Opacus's `RDPAccountant(history).get_epsilon(delta)` returns (tested equal)."""
    if not history:
        return 0.0
    if any(s == 0 for s, _, _ in history):
        return math.inf
    rdp = np.sum([k * np.asarray(_rdp_per_step(s, q)) for s, q, k in history], axis=0)
    with warnings.catch_warnings():
        # "Optimal order is the largest alpha": the bound is looser than it could be, i.e.
        # conservative, at very small epsilon. Not worth a warning per round.
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        eps, _ = get_privacy_spent(orders=RDPAccountant.DEFAULT_ALPHAS, rdp=list(rdp), delta=delta)
    return float(eps)


def train_dp_sgd(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    cfg: TrainConfig,
    dp: DPSGDPlan,
    steps: int,
    *,
    global_params: list[torch.Tensor] | None = None,
) -> float:
    """`steps` DP-SGD steps on (x, y) with `cfg`'s optimiser and learning rate; returns the
    mean loss over the steps. The FedProx pull (`cfg.proximal_mu`) is added after clipping and
    noise: it depends only on the weights, not on any row, so it costs no privacy.
    The model is trained in place and left without Opacus hooks."""
    if len(y) == 0:
        raise ValueError("no training rows")
    # Secret randomness: the sample and the noise must not be predictable from the run config.
    gen = torch.Generator().manual_seed(secrets.randbits(63))
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(y, dtype=np.float32))
    gsm = GradSampleModule(model, loss_reduction="mean")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = DPOptimizer(
        optimizer_for(params, cfg),
        noise_multiplier=dp.noise_multiplier,
        max_grad_norm=dp.max_grad_norm,
        expected_batch_size=dp.expected_batch_size,
        loss_reduction="mean",
        generator=gen,
    )
    # With Poisson sampling the batch size varies; the mean uses the expected size, as Opacus
    # does for its own loaders, so a row's weight does not depend on who else was drawn.
    loss_fn = nn.BCEWithLogitsLoss(reduction="sum")
    anchor = [p.detach().clone() for p in global_params] if global_params else None
    model.train()
    total, count = 0.0, 0
    # Opacus's hooks fire on module outputs when the input needs no gradient (always, here).
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    try:
        for _ in range(steps):
            idx = torch.nonzero(torch.rand(len(yt), generator=gen) < dp.sample_rate).squeeze(1)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(gsm(xt[idx]), yt[idx]) / max(1, len(idx))
            loss.backward()
            if not opt.pre_step():  # clip per sample, add noise, average
                continue
            if anchor is not None and cfg.proximal_mu > 0:
                with torch.no_grad():
                    for p, a in zip(params, anchor, strict=True):
                        assert p.grad is not None
                        p.grad.add_(p.detach() - a, alpha=cfg.proximal_mu)
            opt.original_optimizer.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
    finally:
        gsm._close()  # remove Opacus's hooks and per-sample buffers from the model
    return total / count if count else math.nan
