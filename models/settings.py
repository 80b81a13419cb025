"""Run settings shared by the ServerApp, the ClientApp and the simulation driver.

They travel as the Flower run config (flat kebab-case keys, `[tool.flwr.app.config]` in
pyproject.toml, overridable with `flwr run . --run-config "k=v"`). The defaults here and in
pyproject.toml must agree (a test checks it); unknown keys are rejected so a typo fails loudly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jointcredit.data.catalog import DataConfig
from jointcredit.models.nets import ModelKind
from jointcredit.models.training import TrainConfig


class RunSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    dataset: str = "sba"
    data_dir: str = Field("", alias="data-dir")  # alias of `dataset` for a directory
    schema_file: str = Field("", alias="schema")
    institutions: int = Field(0, ge=0)
    rounds: int = Field(20, ge=1)
    strategy: Literal["fedavg", "fedprox"] = "fedavg"
    model: ModelKind = "logreg"
    seed: int = 42
    out_dir: str = Field("", alias="out-dir")
    local_epochs: int = Field(1, alias="local-epochs", ge=1)
    batch_size: int = Field(128, alias="batch-size", ge=1)
    learning_rate: float = Field(0.01, alias="learning-rate", gt=0)
    proximal_mu: float = Field(0.01, alias="proximal-mu", ge=0)
    test_fraction: float = Field(0.2, alias="test-fraction", gt=0, lt=1)
    central_eval: bool = Field(True, alias="central-eval")
    finetune_epochs: int = Field(5, alias="finetune-epochs", ge=0)
    min_rows: int = Field(100, alias="min-rows", ge=1)
    max_categories: int = Field(64, alias="max-categories", ge=1)
    min_category_count: int = Field(5, alias="min-category-count", ge=1)
    synthetic_rows: int = Field(3000, alias="synthetic-rows", ge=200)
    synthetic_heterogeneity: float = Field(0.5, alias="synthetic-heterogeneity", ge=0, le=1)
    round_timeout: float = Field(600.0, alias="round-timeout", gt=0)
    min_nodes: int = Field(2, alias="min-nodes", ge=1)

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> RunSettings:
        try:
            return cls.model_validate(dict(run_config))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
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

    def train_config(self, *, seed: int, epochs: int | None = None, mu: float = 0.0) -> TrainConfig:
        return TrainConfig(
            epochs=self.local_epochs if epochs is None else epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            proximal_mu=mu,
            seed=seed,
        )
