"""What a model family ("learner") is: one module answers, for its family, how the model is
built, trained by an institution, exchanged, stored and scored.

- `architecture`/`build`: the model the coordinator starts from, and what an artifact's
  `model.json` records so that it can be rebuilt without training code;
- `fit`: one institution's local training on its own rows;
- `exchange`: what an institution sends each round. "weights": the model's arrays, which the
  coordinator combines with the run's Flower strategy (FedAvg and its relatives, a robust
  rule, SecAgg+'s masked sum, institution-level DP's noised mean). "histograms": gradient
  and hessian histograms per tree level, which the coordinator sums to grow trees
  (`jointcredit.models.trees`; no strategy, no local optimiser);
- the artifact stores the arrays of `state_dict()` (`jointcredit.models.artifact`) and
  `from_state` rebuilds the model from them;
- `kernel`: how the eligibility service scores a batch of model inputs (preprocessed rows, or
  for trees bin codes) and explains each score as every feature's push in log-odds (its
  reason codes) from the portfolio-average applicant;
- `convex`: whether the exact posterior-mode fits of the hierarchical personalisation prior
  apply (`jointcredit.models.personalize`);
- `encoding`: whether the model reads the standard preprocessing or WOE over agreed bins
  (then the coordinator runs the binning rounds before training: `jointcredit.server.binning`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from jointcredit.federation.choices import ModelKind
from jointcredit.models.binning.encoding import WoeFeature
from jointcredit.models.preprocessing import PreprocessingSpec
from jointcredit.models.training import DriftControl, TrainConfig, train


class Architecture(BaseModel):
    """A model's shape, stored in the artifact's model card."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: ModelKind
    n_features: int
    hidden: tuple[int, ...] = ()


@dataclass(frozen=True)
class FeatureColumns:
    """Which model inputs (after preprocessing) one schema feature became; for a binned
    feature (one input), also the values that input takes, one per attribute that training
    rows fell in."""

    name: str
    start: int
    stop: int
    attributes: tuple[float, ...] = ()


def feature_columns(spec: PreprocessingSpec) -> list[FeatureColumns]:
    out: list[FeatureColumns] = []
    start = 0
    for f in spec.features:
        seen: tuple[float, ...] = ()
        if isinstance(f, WoeFeature):  # the attributes training rows fell in
            seen = tuple(v for v, n in zip(f.inputs.tolist(), f.rows, strict=True) if n > 0)
        out.append(FeatureColumns(f.name, start, start + f.width, seen))
        start += f.width
    if start != spec.n_outputs:
        raise ValueError(f"feature columns cover {start} of {spec.n_outputs} model inputs")
    return out


def grouping(columns: list[FeatureColumns]) -> np.ndarray:
    """(model inputs, features) 0/1 matrix: per-column values @ it = per-feature sums."""
    g = np.zeros((columns[-1].stop if columns else 0, len(columns)))
    for j, c in enumerate(columns):
        g[c.start : c.stop, j] = 1.0
    return g


class Kernel(Protocol):
    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows, inputs) float32 -> PD per row (float64), (rows, features) contributions.

        The reference point is the portfolio-average applicant: the agreed preprocessing
        centres every numeric column on the federation's mean and every one-hot column on the
        level's frequency, so an all-zero input row is that average applicant."""
        ...


def sigmoid(z: np.ndarray) -> np.ndarray:
    out: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow warning for large |z|
    return out


class Learner(ABC):
    kind: ClassVar[ModelKind]
    exchange: ClassVar[Literal["weights", "histograms"]] = "weights"
    convex: ClassVar[bool] = False
    # What the model's inputs are: the agreed standardised/one-hot preprocessing, or each
    # feature's weight of evidence over the federation's agreed bins (a binning phase first).
    encoding: ClassVar[Literal["standard", "woe"]] = "standard"

    @abstractmethod
    def architecture(self, n_features: int) -> Architecture: ...

    @abstractmethod
    def module(self, arch: Architecture) -> nn.Module:
        """A freshly initialised network of `arch` (with torch's current RNG state)."""

    def build(self, arch: Architecture, *, seed: int = 0) -> nn.Module:
        """A freshly initialised model; the seed makes the initial global weights
        reproducible (torch's global RNG is left as it was)."""
        if arch.kind != self.kind:
            raise ValueError(f"a {arch.kind} architecture given to the {self.kind} learner")
        state = torch.random.get_rng_state()
        # The CPU generator only (what is restored below): torch.manual_seed also queues a
        # lazy CUDA seeding that records a stack trace, ~200 us per model built.
        torch.default_generator.manual_seed(seed)
        try:
            return self.module(arch)
        finally:
            torch.random.set_rng_state(state)

    def from_state(self, arch: Architecture, state: dict[str, np.ndarray]) -> nn.Module:
        """The model of `arch` holding the stored arrays `state` (exactly its parameters)."""
        model = self.build(arch)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
        return model

    def fit(
        self,
        model: nn.Module,
        x: np.ndarray,
        y: np.ndarray,
        cfg: TrainConfig,
        *,
        global_params: list[torch.Tensor] | None = None,
        drift: DriftControl | None = None,
    ) -> float:
        """One institution's local training of `model` (in place); the last pass's loss."""
        if self.exchange != "weights":
            raise NotImplementedError(
                f"{self.kind} is not fitted by local steps on weights: it exchanges {self.exchange}"
            )
        return train(model, x, y, cfg, global_params=global_params, control=drift)

    @abstractmethod
    def kernel(
        self, model: nn.Module, columns: list[FeatureColumns], reference: np.ndarray | None = None
    ) -> Kernel:
        """`reference`: the portfolio-average applicant's model inputs, for a family whose
        inputs do not make it the all-zero row (trees: its bin codes); the others ignore it."""
