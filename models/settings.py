"""Run settings shared by the ServerApp, the ClientApp and the simulation driver.

They travel as the Flower run config (flat kebab-case keys, `[tool.flwr.app.config]` in
pyproject.toml, overridable with `flwr run . --run-config "k=v"`). The defaults here and in
pyproject.toml must agree (a test checks it); unknown keys are rejected so a typo fails loudly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from jointcredit.data.catalog import DataConfig
from jointcredit.models.nets import ModelKind
from jointcredit.models.training import Optimizer, TrainConfig

# Defaults are the recipe that brings the federated logistic scorecard within 0.005 AUC of the
# pooled optimum on the SBA lenders in 20 rounds (docs/BENCHMARKS.md). Why each part matters:
# - standardised one-hot columns: plain SGD on raw 0/1 columns is conditioned ~1e6 badly;
# - plain SGD, not Adam: per-client Adam moves rare, lender-specific weights ~lr per step
#   whatever their gradient, so the average update stops following the pooled gradient and
#   FedAvg settles ~0.007 AUC below the optimum;
# - a fixed number of local steps: with one epoch each, the largest lender takes 12x the steps
#   of the smallest and its drift dominates;
# - server momentum (FedAvgM 0.7) and a learning rate decaying linearly over the rounds.
# The MLP has its own recipe (`MLP_RECIPE`), applied by the CLI when `--model mlp`: one local
# epoch of Adam per round with SCAFFOLD's drift correction (FedAvgM 0.5 without it stayed
# ~0.012 AUC below pooled training; SCAFFOLD closed most of that, see server/scaffold.py).
MLP_RECIPE: dict[str, Any] = {
    "optimizer": "adam",
    "learning-rate": 0.003,
    "lr-schedule": "linear",
    "local-steps": 0,
    "strategy": "scaffold",
}
# SCAFFOLD's control variates would bypass DP, SecAgg+ and robust aggregation; under those the
# MLP keeps the recipe it had before SCAFFOLD.
MLP_RECIPE_WITHOUT_SCAFFOLD: dict[str, Any] = {
    **MLP_RECIPE,
    "strategy": "fedavgm",
    "server-momentum": 0.5,
}


def model_recipe(model: str, privacy: str, aggregator: str) -> dict[str, Any]:
    """The run-config defaults a model's recipe sets (on top of `RunSettings`' defaults)."""
    if model != "mlp":
        return {}
    if privacy != "none" or aggregator != "fedavg":
        return dict(MLP_RECIPE_WITHOUT_SCAFFOLD)
    return dict(MLP_RECIPE)


# Robust aggregation (Flower's strategies) and the simulated attacks it is measured against;
# see jointcredit.privacy.robust.
Aggregator = Literal["fedavg", "median", "trimmed", "krum", "multikrum", "bulyan"]
Attack = Literal["none", "sign-flip", "scale", "label-flip"]
# Privacy settings (see jointcredit.privacy): plain federated training; DP-SGD inside each
# institution (protects each borrower's row); Gaussian noise on the average of clipped
# institution updates (protects an institution's participation).
PrivacySetting = Literal["none", "dp-record", "dp-institution", "secagg"]
# Secure aggregation (Flower SecAgg+) hides each institution's update from the coordinator.
# Institution-level DP weighs every institution equally: Flower's accountant requires it, and a
# size-weighted average would let a large lender's update exceed its clipped share. Clients
# report this metric = 1 and the strategy averages by it.
UNIT_WEIGHT = "unit-weight"


def default_run_dir(run_id: int) -> Path:
    return Path.home() / ".jointcredit" / "runs" / str(run_id)


class RunSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    dataset: str = "sba"
    data_dir: str = Field("", alias="data-dir")  # alias of `dataset` for a directory
    schema_file: str = Field("", alias="schema")
    institutions: int = Field(0, ge=0)
    rounds: int = Field(20, ge=1)
    strategy: Literal["fedavg", "fedprox", "fedavgm", "scaffold"] = "fedavgm"
    model: ModelKind = "logreg"
    seed: int = 42
    out_dir: str = Field("", alias="out-dir")
    local_epochs: int = Field(1, alias="local-epochs", ge=1)
    batch_size: int = Field(128, alias="batch-size", ge=1)
    learning_rate: float = Field(0.3, alias="learning-rate", gt=0)
    optimizer: Optimizer = "sgd"
    # Learning rate by round: constant, or decaying linearly / along a cosine to `lr-floor`.
    lr_schedule: Literal["constant", "linear", "cosine"] = Field("linear", alias="lr-schedule")
    lr_floor: float = Field(0.0, alias="lr-floor", ge=0, le=1)
    local_steps: int = Field(36, alias="local-steps", ge=0)  # > 0 replaces local-epochs
    standardize_indicators: bool = Field(True, alias="standardize-indicators")
    server_momentum: float = Field(0.7, alias="server-momentum", ge=0, lt=1)  # FedAvgM
    proximal_mu: float = Field(0.01, alias="proximal-mu", ge=0)
    test_fraction: float = Field(0.2, alias="test-fraction", gt=0, lt=1)
    central_eval: bool = Field(True, alias="central-eval")
    finetune_epochs: int = Field(5, alias="finetune-epochs", ge=0)  # 0: no personalisation
    # How each institution personalises (models/personalize.py); `auto`: hierarchical for the
    # logistic scorecard without privacy settings or a robust rule, otherwise ditto.
    personalization: Literal["auto", "ditto", "hierarchical"] = "auto"
    min_rows: int = Field(100, alias="min-rows", ge=1)
    max_categories: int = Field(64, alias="max-categories", ge=1)
    min_category_count: int = Field(5, alias="min-category-count", ge=1)
    synthetic_rows: int = Field(3000, alias="synthetic-rows", ge=200)
    synthetic_heterogeneity: float = Field(0.5, alias="synthetic-heterogeneity", ge=0, le=1)
    round_timeout: float = Field(600.0, alias="round-timeout", gt=0)
    min_nodes: int = Field(2, alias="min-nodes", ge=1)
    # A training or evaluation round goes on when at least this share of the institutions sent
    # a reply that verified; otherwise it fails, naming every rejection.
    min_valid_fraction: float = Field(0.5, alias="min-valid-fraction", gt=0, le=1)
    # Identities. Deployment: `trust-file` + `coordinator-key` on the coordinator, each node's
    # `signing-key` in its node config. Simulation: `keys-dir` with trust.json,
    # coordinator.key and <institution>.key; left empty, keys are generated for the run.
    keys_dir: str = Field("", alias="keys-dir")
    trust_file: str = Field("", alias="trust-file")
    coordinator_key: str = Field("", alias="coordinator-key")
    coordinator_key_passphrase_env: str = Field("", alias="coordinator-key-passphrase-env")
    checkpoints: bool = True  # a signed artifact per round under OUT/checkpoints/
    # Simulation only: "institution:attack,..." misbehaving nodes (see client/adversary.py).
    adversary: str = ""
    # Robust aggregation: `fedavg` keeps `strategy`; the others are Flower's FedMedian,
    # FedTrimmedAvg (cutting `trim-fraction` at each end), Krum, MultiKrum, Bulyan, guarding
    # against `assumed-attackers` (-1: as many as are simulated, at least 1).
    aggregator: Aggregator = "fedavg"
    trim_fraction: float = Field(0.2, alias="trim-fraction", ge=0, lt=0.5)
    assumed_attackers: int = Field(-1, alias="assumed-attackers", ge=-1)
    # Simulation only: this many institutions (drawn with the seed) poison their updates.
    attackers: int = Field(0, ge=0)
    attack: Attack = "none"
    attack_scale: float = Field(10.0, alias="attack-scale", gt=0)
    # Privacy. `epsilon` and `delta` are each institution's budget (dp-record) or the
    # federation's (dp-institution); `epsilon = inf` clips without noise. `noise-multiplier`
    # 0 calibrates the noise to spend the budget over the planned rounds; a fixed value makes
    # the enforced budget stop institutions that run out. `max-grad-norm`: per-row gradient
    # clipping bound of DP-SGD.
    privacy: PrivacySetting = "none"
    epsilon: float = Field(1.0, gt=0)
    delta: float = Field(1e-5, gt=0, lt=1)
    noise_multiplier: float = Field(0.0, alias="noise-multiplier", ge=0)
    max_grad_norm: float = Field(1.0, alias="max-grad-norm", gt=0)
    # Institution-level DP: each update's L2 bound, and who clips it (the coordinator, or the
    # institution before signing with Flower's fixedclipping_mod).
    clipping_norm: float = Field(1.0, alias="clipping-norm", gt=0)
    dp_clipping: Literal["server", "client"] = Field("server", alias="dp-clipping")
    # SecAgg+ (Flower's convention: <= 1 is a share, > 1 a count): how many neighbours hold a
    # share of each institution's key, how many shares rebuild it (dropout tolerance vs
    # collusion), and the range parameters are clipped to before quantisation.
    secagg_shares: float = Field(1.0, alias="secagg-shares", gt=0)
    secagg_threshold: float = Field(0.5, alias="secagg-threshold", gt=0)
    secagg_clipping_range: float = Field(8.0, alias="secagg-clipping-range", gt=0)

    @model_validator(mode="after")
    def _privacy_combinations(self) -> RunSettings:
        """Settings that cannot work together fail before anything runs."""
        if self.privacy in ("secagg", "dp-institution") and self.aggregator != "fedavg":
            raise ValueError(
                f"aggregator {self.aggregator} needs each institution's own update, which "
                f"{self.privacy} does not give the coordinator: use aggregator fedavg"
            )
        if self.personalization == "hierarchical" and not self._hierarchical_allowed:
            raise ValueError(
                "personalization hierarchical needs model logreg, privacy none and aggregator "
                "fedavg: each institution's deviations reach the coordinator unnoised and "
                "unmasked, and the prior's fits are exact only for the convex scorecard"
            )
        if self.privacy == "dp-institution" and math.isinf(self.epsilon):
            raise ValueError("dp-institution needs a finite epsilon")
        if self.strategy == "scaffold" and (self.privacy != "none" or self.aggregator != "fedavg"):
            # Each reply's control variate is its institution's mean gradient, neither
            # noised, clipped, masked nor screened: it would bypass any of these settings.
            raise ValueError(
                "strategy scaffold works only without privacy settings and with aggregator "
                f"fedavg (got privacy {self.privacy}, aggregator {self.aggregator})"
            )
        return self

    @property
    def _hierarchical_allowed(self) -> bool:
        return self.model == "logreg" and self.privacy == "none" and self.aggregator == "fedavg"

    @property
    def personalization_method(self) -> Literal["ditto", "hierarchical"] | None:
        """What the final round runs (None: no personalisation)."""
        if self.finetune_epochs == 0:
            return None
        if self.personalization == "auto":
            return "hierarchical" if self._hierarchical_allowed else "ditto"
        return self.personalization

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> RunSettings:
        try:
            return cls.model_validate(dict(run_config))
        except ValidationError as exc:
            problems = "; ".join(
                (f"{'.'.join(map(str, e['loc']))}: " if e["loc"] else "")
                + str(e["msg"]).removeprefix("Value error, ")
                for e in exc.errors()
            )
            raise ValueError(f"invalid run config: {problems}") from exc

    def to_run_config(self) -> dict[str, int | float | bool | str]:
        return self.model_dump(by_alias=True)

    @property
    def data(self) -> DataConfig:
        return DataConfig(
            dataset=self.data_dir or self.dataset,
            schema=self.schema_file,
            institutions=self.institutions,
            seed=self.seed,
            test_fraction=self.test_fraction,
            min_rows=self.min_rows,
            synthetic_rows=self.synthetic_rows,
            synthetic_heterogeneity=self.synthetic_heterogeneity,
        )

    def run_dir(self, run_id: int) -> Path:
        """Where this run writes (OUT): `out-dir`, or ~/.jointcredit/runs/<run id>."""
        return Path(self.out_dir) if self.out_dir else default_run_dir(run_id)

    def steps_per_round(self, n_rows: int) -> int:
        """Local optimiser steps of one round for an institution with `n_rows` training rows."""
        if self.local_steps > 0:
            return self.local_steps
        return self.local_epochs * max(1, math.ceil(n_rows / self.batch_size))

    def lr_at(self, server_round: int) -> float:
        """Learning rate of round `server_round` (1-based); never zero, the last round trains."""
        progress = (min(max(server_round, 1), self.rounds) - 1) / self.rounds
        if self.lr_schedule == "linear":
            scale = 1.0 - progress
        elif self.lr_schedule == "cosine":
            scale = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            scale = 1.0
        return self.learning_rate * (self.lr_floor + (1.0 - self.lr_floor) * scale)

    def train_config(
        self,
        *,
        seed: int,
        server_round: int | None = None,
        epochs: int | None = None,
        mu: float = 0.0,
    ) -> TrainConfig:
        """Local training of round `server_round` (None: the base learning rate, full epochs)."""
        return TrainConfig(
            epochs=self.local_epochs if epochs is None else epochs,
            steps=self.local_steps if epochs is None and server_round is not None else 0,
            batch_size=self.batch_size,
            learning_rate=self.lr_at(server_round) if server_round else self.learning_rate,
            proximal_mu=mu,
            seed=seed,
            optimizer=self.optimizer,
        )
