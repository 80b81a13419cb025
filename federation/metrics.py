"""`RunMetrics`: the schema of `OUT/metrics.json`, written once and read through this model.

The coordinator's ServerApp writes the run's own part (`federated`, `per_institution`,
`rounds`, `security`, `privacy`, ...); a simulation adds what only a holder of every row can
compute (`centralized`, `local_only`, the membership-inference audit). Keys are the JSON
contract: `jointcredit schema metrics` prints the JSON schema; a key a run did not produce is
absent (dumps use `exclude_unset`), a metric that is undefined (one-class test split) is null.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jointcredit.federation.fairness import Fairness

JsonDict = dict[str, Any]


class _Section(BaseModel):
    # Infinity stays Infinity (epsilon = inf: clipping without noise), as json.dumps writes it:
    # pydantic's default would write null, which a number field cannot read back.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, ser_json_inf_nan="constants")


class Scores(_Section):
    """Discrimination and calibration on one test set (None: undefined)."""

    auc: float | None = None
    ks: float | None = None
    brier: float | None = None


class Headline(Scores):
    evaluated_on: str = Field(description="pooled test split, or institutions (weighted)")


class Centralized(Scores):
    """The same model trained on every institution's rows pooled (simulation only)."""

    optimum_auc: float | None = None
    # gbdt: this project's engine on the pooled rows with the federation's bins (what the
    # federated ensemble equals; the headline centralized figures are XGBoost's).
    same_bins_auc: float | None = None


class LocalOnlyInstitution(_Section):
    auc_own: float | None = None
    auc_pooled: float | None = None
    ks_pooled: float | None = None
    brier_pooled: float | None = None


class LocalOnly(_Section):
    """Each institution alone (simulation only)."""

    mean_auc: float | None = None
    mean_ks: float | None = None
    mean_brier: float | None = None
    mean_own_auc: float | None = None
    per_institution: dict[str, LocalOnlyInstitution] = Field(default_factory=dict)


class ScoreHistogram(_Section):
    """The final model's scores on one institution's test split: counts per score band and
    label (no row), for the validation report's curves (`jointcredit report`)."""

    edges: list[float] = Field(description="band edges on the score scale, low (risky) first")
    good: list[int]
    bad: list[int]


class InstitutionResult(_Section):
    """The final model on one institution's own test split."""

    auc: float | None = None
    ks: float | None = None
    brier: float | None = None
    auc_personalized: float | None = None
    n_test: int
    personalized_mu: float | None = Field(
        default=None, description="Ditto only: the chosen strength; -1: the global model"
    )
    rejected_replies: int = 0
    auc_local_only: float | None = None
    score_histogram: ScoreHistogram | None = None


class Personalization(_Section):
    method: str | None = Field(description="hierarchical, ditto, or null: none")
    prior_institutions: list[str] | None = None
    ditto_institutions: list[str] | None = None


class Dropped(_Section):
    """An institution asked in a round whose reply the round went on without."""

    institution: str
    exchange: str = Field(description="the message it did not answer: train, evaluate, ...")
    reason: str = Field(
        description="its error reply (a crash), no reply before the round timeout, or a "
        "reply that came after the round had ended (not used)"
    )


class RoundRecord(_Section):
    round: int
    errors: dict[str, str] = Field(default_factory=dict)
    dropped: list[Dropped] = Field(
        default_factory=list,
        description="institutions that crashed, timed out or replied late in this round",
    )
    train_loss: float | None = None
    train_institutions: list[str] | None = None
    scaffold_fresh_control: list[str] | None = None
    withheld: list[str] | None = None
    epsilon_per_institution: dict[str, float | None] | None = None
    per_institution_auc: dict[str, float | None] | None = None
    rejected: dict[str, str] = Field(default_factory=dict)
    central: JsonDict | None = None
    epsilon: float | None = None


class Rejection(_Section):
    round: int | None
    message_type: str
    institution: str
    reason: str
    detail: str


class Security(_Section):
    verified_replies: int
    rejected_replies: int
    rejected_by_reason: dict[str, int]
    rejections: list[Rejection]
    trust_store_sha256: str
    coordinator_key_id: str
    signing_seconds: float
    verification_seconds: float


class AttackRecord(_Section):
    kind: str
    attackers: list[str]
    scale: float | None = None


class RecordDP(_Section):
    mechanism: str
    max_grad_norm: float
    noise_multiplier: dict[str, float | None]
    sample_rate: dict[str, float | None]
    steps: dict[str, int]
    budget_exhausted_round: dict[str, int] = Field(
        description="the first round in which each institution could not take all its steps"
    )
    covers: str


class InstitutionDP(_Section):
    mechanism: str
    clipping: str
    clipping_norm: float
    noise_multiplier: float | None
    releases: int
    epsilon_by_round: dict[int, float]
    covers: str


class SecAgg(_Section):
    num_shares: int
    reconstruction_threshold: int
    clipping_range: float
    max_weight: int
    institutions_aggregated: dict[int, int]
    signed: str


class Stopped(_Section):
    after_round: int
    reason: str


class MembershipAudit(_Section):
    attacks: list[JsonDict]
    headline: str
    members: str
    nonmembers: str
    seconds: float


class Privacy(_Section):
    """The privacy setting, the budget and what was spent, the aggregation rule and any
    simulated attack, and (simulation) the membership-inference audit."""

    setting: str
    epsilon: float | None = None
    delta: float | None = None
    epsilon_spent: float | None = None
    epsilon_per_institution: dict[str, float | None] | None = None
    record_dp: RecordDP | None = None
    institution_dp: InstitutionDP | None = None
    secagg: SecAgg | None = None
    stopped: Stopped | None = None
    aggregator: str
    assumed_attackers: int | None = None
    attack: AttackRecord
    mia_auc: float | None = None
    mia_tpr_at_1pct_fpr: float | None = None
    mia: MembershipAudit | None = None


class TreeTiming(_Section):
    """Gradient-boosted trees: where the trees phase spent its time."""

    levels: int = Field(description="histogram exchanges (one per tree level)")
    exchange_seconds: float = Field(
        description="waiting for the levels' replies: messages, signing, verification and "
        "the institutions' histogram work"
    )
    institution_histogram_seconds_max: float = Field(
        description="per level the slowest institution's histogram work, summed over levels"
    )
    institution_histogram_seconds_total: float = Field(
        description="every institution's histogram work, summed"
    )
    coordinator_seconds: float = Field(
        description="the coordinator's own work: summing histograms, choosing splits"
    )


class Timing(_Section):
    server_seconds: float
    setup_seconds: float
    training_seconds: float
    personalization_seconds: float
    round_seconds: list[float]
    baselines_seconds: float | None = None
    audit_seconds: float | None = None
    simulation_seconds: float | None = None
    total_seconds: float | None = None
    trees: TreeTiming | None = None


class PreprocessingDigest(_Section):
    n_features: int
    sha256: str


class RunMetrics(_Section):
    """`OUT/metrics.json`."""

    run_id: int
    config: dict[str, int | float | bool | str]
    institutions: list[str]
    preprocessing: PreprocessingDigest
    federated: Headline
    federated_eval: dict[str, float | None] = Field(
        description="the final model on each institution's own test split, weighted by rows"
    )
    per_institution: dict[str, InstitutionResult]
    personalization: Personalization
    rounds: list[RoundRecord]
    trained_rounds: int
    security: Security
    privacy: Privacy
    timing: Timing
    dataset: str | None = None
    centralized: Centralized | None = None
    local_only: LocalOnly | None = None
    sweep_wall_seconds: float | None = Field(default=None, description="a sweep cell's wall time")
    fairness: Fairness | None = Field(
        default=None, description="group fairness across the schema's protected attributes"
    )

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, exclude_unset=True) + "\n"

    def write(self, path: Path) -> None:
        """Atomically and durably: a crash leaves the previous file or the new one, never a
        half-written one, and no temporary file."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with tmp.open("w", encoding="utf-8") as fh:
                fh.write(self.to_json())
                fh.flush()
                os.fsync(fh.fileno())
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def read(cls, path: Path) -> RunMetrics:
        return cls.model_validate_json(path.read_bytes())

    def as_json(self) -> JsonDict:
        """The JSON object as written (for callers that report it as is)."""
        value: JsonDict = json.loads(self.to_json())
        return value


def metrics_schema() -> JsonDict:
    return RunMetrics.model_json_schema()
