"""Run settings: one validated model for every way a run starts.

They travel as Flower's run config (flat kebab-case keys: `[tool.flwr.app.config]` in
pyproject.toml, `flwr run . --run-config "k=v"`, `jointcredit simulate --run-config`, a sweep's
grid, `link run`). Validation does all of the resolving, so every caller gets the same run from
the same keys:

- before: keys left out or set to `auto` take the model's recipe (`recipes`);
- after: every rule between fields; an impossible combination raises `SettingsError` naming
  the keys, before any node starts. Rules that need the number of institutions apply once it
  is known (`institutions > 0`, see `for_institutions`).

Unknown keys are rejected, so a typo fails loudly.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from jointcredit.data.catalog import DataConfig
from jointcredit.data.files import DEFAULT_MAX_FILE_MB
from jointcredit.data.frames import SplitKind
from jointcredit.federation import recipes, rules
from jointcredit.federation.choices import (
    ADVERSARY_ATTACKS,
    Aggregator,
    Attack,
    DpClipping,
    ModelKind,
    Optimizer,
    Personalization,
    PrivacySetting,
    Schedule,
    Strategy,
    assumed_attackers,
)

AUTO = recipes.AUTO
# Settings naming this machine's files (outputs, keys): not part of a model's provenance.
# Where this machine keeps a run and its keys, and whether this start continues one: they say
# nothing about the model, so a signed model does not record them and a resume may differ.
MACHINE_LOCAL = (
    "out-dir",
    "keys-dir",
    "trust-file",
    "coordinator-key",
    "resume",
    "institution-state-dir",
)


class SettingsError(ValueError):
    """Settings that cannot run: the message names the keys."""


def default_run_dir(run_id: int) -> Path:
    return Path.home() / ".jointcredit" / "runs" / str(run_id)


def _field(description: str, default: Any, alias: str | None = None, **limits: Any) -> Any:
    return Field(default, alias=alias, description=description, **limits)


class RunSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    dataset: str = _field(
        "sba (shipped sample), sba-full, hmda (Boston mortgages), synthetic, or a directory", "sba"
    )
    data_dir: str = _field("a bring-your-own-data directory (instead of dataset)", "", "data-dir")
    schema_file: str = _field("schema file for a directory (default DIR/schema.toml)", "", "schema")
    institutions: int = _field("institutions to use, largest first (0: all)", 0, ge=0)
    rounds: int = _field("federated training rounds", 20, ge=1)
    model: ModelKind = _field(
        "logreg (scorecard on standardised inputs), mlp, scorecard (binned: WOE inputs, a "
        "points table) or gbdt (gradient-boosted trees, lossless); auto: gbdt, or logreg "
        "when the run sets what only weight updates have (DP, a robust rule, rounds, ...)",
        recipes.AUTO_TREES,
    )
    seed: int = _field("seed of splits, initial weights and local training", 42)
    out_dir: str = _field("where model and metrics go", "", "out-dir")
    strategy: Strategy = _field("Flower strategy (auto: the model's recipe)", "fedavgm")
    optimizer: Optimizer = _field("local optimiser (auto: the model's recipe)", "sgd")
    learning_rate: float = _field(
        "local learning rate of round 1 (auto: the model's recipe)", 0.3, "learning-rate", gt=0
    )
    lr_schedule: Schedule = _field(
        "learning rate by round, decaying to lr-floor (auto: the model's recipe)",
        "linear",
        "lr-schedule",
    )
    lr_floor: float = _field(
        "last learning rate, a share of the first", 0.0, "lr-floor", ge=0, le=1
    )
    local_steps: int = _field(
        "local steps per round; 0: local-epochs full passes (auto: the model's recipe)",
        36,
        "local-steps",
        ge=0,
    )
    local_epochs: int = _field(
        "full passes per round when local-steps is 0", 1, "local-epochs", ge=1
    )
    batch_size: int = _field("minibatch rows", 128, "batch-size", ge=1)
    standardize_indicators: bool = _field(
        "standardise one-hot and missing-indicator columns", True, "standardize-indicators"
    )
    server_momentum: float = _field(
        "FedAvgM's server momentum (auto: the model's recipe)",
        0.7,
        "server-momentum",
        ge=0,
        lt=1,
    )
    proximal_mu: float = _field("FedProx's proximal strength", 0.01, "proximal-mu", ge=0)
    test_fraction: float = _field("each institution's test split", 0.2, "test-fraction", gt=0, lt=1)
    split: SplitKind = _field(
        "train/test split inside each institution: random (stratified) or time (train on "
        "earlier rows, test on the latest test-fraction by the schema's time column)",
        "random",
    )
    hindsight_vintage: bool = _field(
        "SBA only, hindsight: the approval year as a feature (not known at decision time: "
        "it tells the model which vintages went bad later)",
        False,
        "hindsight-vintage",
    )
    central_eval: bool = _field(
        "simulation only: also evaluate on the pooled test split", True, "central-eval"
    )
    finetune_epochs: int = _field(
        "personalisation epochs in the final round (0: none)", 5, "finetune-epochs", ge=0
    )
    personalization: Personalization = _field(
        "how institutions personalise (auto: hierarchical for logreg and scorecard without "
        "privacy or robust rules, else ditto)",
        "auto",
    )
    min_rows: int = _field("fewest rows an institution may have", 100, "min-rows", ge=1)
    max_file_mb: int = _field(
        "largest institution file read, in MiB (reading peaks at a few times its size)",
        DEFAULT_MAX_FILE_MB,
        "max-file-mb",
        ge=1,
    )
    max_categories: int = _field(
        "most category values a node reports per feature", 64, "max-categories", ge=1
    )
    min_category_count: int = _field(
        "rarest category value a node reports", 5, "min-category-count", ge=1
    )
    fine_bins: int = _field(
        "scorecard: fine classing's most bins per numeric feature (agreed from the "
        "institutions' histograms)",
        32,
        "fine-bins",
        ge=2,
        le=1024,
    )
    min_bin_share: float = _field(
        "scorecard: coarse classing's smallest attribute, a share of the training rows",
        0.05,
        "min-bin-share",
        gt=0,
        lt=0.5,
    )
    synthetic_rows: int = _field("synthetic: rows per institution", 3000, "synthetic-rows", ge=200)
    synthetic_heterogeneity: float = _field(
        "synthetic: how non-IID institutions are", 0.5, "synthetic-heterogeneity", ge=0, le=1
    )
    round_timeout: float = _field("seconds a round may take", 600.0, "round-timeout", gt=0)
    join_timeout: float = _field(
        "seconds the nodes may take to join and answer the first queries (preprocessing, "
        "bins), which load their data (0: round-timeout)",
        0.0,
        "join-timeout",
        ge=0,
    )
    min_nodes: int = _field("institutions the coordinator waits for", 2, "min-nodes", ge=1)
    fraction_train: float = _field(
        "share of the institutions sampled to train each round (Flower's fraction_train; "
        "at least one; all of them still evaluate): weight models without secagg, "
        "dp-institution or scaffold",
        1.0,
        "fraction-train",
        gt=0,
        le=1,
    )
    min_valid_fraction: float = _field(
        "share of verified replies a round needs", 0.5, "min-valid-fraction", gt=0, le=1
    )
    min_institutions: int = _field(
        "fewest institutions whose verified replies a round needs (0: only "
        "min-valid-fraction of those asked); below it the run stops",
        0,
        "min-institutions",
        ge=0,
    )
    faults: str = _field(
        "simulation: per training round (gbdt: per tree), the share of institutions that "
        "crash, drop out (no reply) or straggle (reply after round-timeout), drawn by seed, "
        "e.g. 'dropout=0.3,straggler=0.1,crash=0.05'",
        "",
    )
    # Identities. Deployment: trust-file + coordinator-key on the coordinator, each node's
    # signing key in its node config. Simulation: keys-dir, or nothing (keys made for the run).
    keys_dir: str = _field("simulation: a key set (trust.json, *.key)", "", "keys-dir")
    trust_file: str = _field("deployment: the federation's trust store", "", "trust-file")
    coordinator_key: str = _field("deployment: the coordinator's key", "", "coordinator-key")
    coordinator_key_passphrase_env: str = _field(
        "deployment: environment variable holding the key's passphrase",
        "",
        "coordinator-key-passphrase-env",
    )
    checkpoints: bool = _field("a signed checkpoint per round", True)
    resume: bool = _field(
        "continue the run in out-dir from its latest signed checkpoint (same settings)", False
    )
    institution_state_dir: str = _field(
        "simulation: where each institution keeps what must survive a crash (DP ledger, "
        "SCAFFOLD's c_i); deployment: the node config's state-dir",
        "",
        "institution-state-dir",
    )
    adversary: str = _field(
        "simulation: misbehaving institutions, e.g. 'bank-a:tamper-array' (attacks: "
        + ", ".join(ADVERSARY_ATTACKS)
        + ")",
        "",
    )
    aggregator: Aggregator = _field(
        "aggregation rule: fedavg (the strategy) or a robust Flower strategy", "fedavg"
    )
    trim_fraction: float = _field(
        "trimmed mean: share cut at each end", 0.2, "trim-fraction", ge=0, lt=0.5
    )
    assumed_attackers: int = _field(
        "Krum/MultiKrum/Bulyan f (-1: attackers, at least 1)", -1, "assumed-attackers", ge=-1
    )
    attackers: int = _field(
        "simulation: institutions that poison their updates (drawn by seed)", 0, ge=0
    )
    attack: Attack = _field("what the attackers do", "none")
    attack_scale: float = _field(
        "sign-flip/scale factor on the honest update", 10.0, "attack-scale", gt=0
    )
    privacy: PrivacySetting = _field(
        "none; dp-record: DP-SGD in each institution (protects borrowers); dp-institution: "
        "noise on the average of clipped updates (protects institutions); secagg: Flower "
        "SecAgg+ (the coordinator sees only the sum of masked updates; gbdt: of each tree "
        "level's histograms)",
        "none",
    )
    epsilon: float = _field(
        "privacy budget: per institution (dp-record; inf: clip only) or the federation's",
        1.0,
        gt=0,
    )
    delta: float = _field("DP delta", 1e-5, gt=0, lt=1)
    noise_multiplier: float = _field(
        "fixed DP noise (0: calibrated to spend the budget over the planned rounds)",
        0.0,
        "noise-multiplier",
        ge=0,
    )
    max_grad_norm: float = _field(
        "DP-SGD per-row gradient clipping bound", 1.0, "max-grad-norm", gt=0
    )
    clipping_norm: float = _field(
        "dp-institution: bound on each update's L2 norm", 1.0, "clipping-norm", gt=0
    )
    dp_clipping: DpClipping = _field(
        "dp-institution: who clips (client: before signing)", "server", "dp-clipping"
    )
    secagg_shares: float = _field(
        "secagg: key shares per institution (<= 1: a share)", 1.0, "secagg-shares", gt=0
    )
    secagg_threshold: float = _field(
        "secagg: shares that rebuild a key (<= 1: a share)", 0.5, "secagg-threshold", gt=0
    )
    secagg_clipping_range: float = _field(
        "secagg: range parameters are clipped to before quantisation",
        8.0,
        "secagg-clipping-range",
        gt=0,
    )
    # Fairness across the schema's protected attributes (models/fairness.py): the decisions
    # are the service policy's cut-offs; the defaults are the shipped default policy's
    # (`service/default_policy.toml`, kept equal by a test).
    fairness: bool = _field(
        "measure group fairness of the final model when the schema names protected attributes",
        True,
    )
    fairness_approve: int = _field(
        "fairness: the policy's approve cut-off (score at or above: approved)",
        680,
        "fairness-approve",
        ge=350,
        le=950,
    )
    fairness_decline: int = _field(
        "fairness: the policy's decline cut-off (score below: declined; between: referred)",
        600,
        "fairness-decline",
        ge=350,
        le=950,
    )
    # Gradient-boosted trees (model gbdt): XGBoost's parameters under their usual names.
    # Defaults sized for the default run (`make demo`) to stay under 2 minutes: every tree
    # level is a message round (docs/BENCHMARKS.md compares them with 100 trees of depth 6).
    trees: int = _field("gbdt: boosted trees", 40, ge=1, le=10_000)
    max_depth: int = _field("gbdt: depth of each tree", 5, "max-depth", ge=1, le=16)
    max_bins: int = _field(
        "gbdt: bins per numeric feature the institutions agree", 64, "max-bins", ge=2, le=256
    )
    tree_learning_rate: float = _field(
        "gbdt: shrinkage of each tree (XGBoost's eta)", 0.2, "tree-learning-rate", gt=0, le=1
    )
    min_child_weight: float = _field(
        "gbdt: least hessian sum a leaf may hold", 1.0, "min-child-weight", ge=0
    )
    reg_lambda: float = _field("gbdt: L2 penalty on leaf weights", 1.0, "reg-lambda", ge=0)
    min_split_loss: float = _field(
        "gbdt: least loss reduction a split must bring (XGBoost's gamma)",
        0.0,
        "min-split-loss",
        ge=0,
    )
    personal_trees: int = _field(
        "gbdt: each institution's own extra trees on its residuals, on top of the global "
        "ones, in the final round (0: no personalisation)",
        10,
        "personal-trees",
        ge=0,
    )
    layout: Literal["horizontal", "vertical"] = _field(
        "horizontal (institutions hold different applicants) or vertical (a bank and "
        "platforms hold different columns of the same applicants: docs/VERTICAL.md)",
        "horizontal",
    )
    label_only_trees: int = _field(
        "vertical runs: the first K trees on the label party's features alone",
        0,
        "label-only-trees",
        ge=0,
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_recipe(cls, data: Any) -> Any:
        """Keys left out or `auto` take the model's recipe (adjusted for privacy and
        aggregation); keys the caller set stay as set."""
        if not isinstance(data, Mapping):
            return data
        given = dict(data)

        def spellings(key: str) -> list[str]:
            return list(dict.fromkeys((key, key.replace("-", "_"))))

        def value(key: str, default: str) -> Any:
            for k in spellings(key):
                if k in given and given[k] != AUTO:
                    return given[k]
            return default

        model = str(value("model", AUTO))
        if model == AUTO:
            model = recipes.auto_model(cls._changed(given))
            for k in spellings("model"):
                given.pop(k, None)
            given["model"] = model
        chosen = recipes.recipe(
            model,
            str(value("privacy", "none")),
            str(value("aggregator", "fedavg")),
        )
        for key, recipe_value in chosen.items():
            names = [k for k in spellings(key) if k in given]
            if not names or all(given[k] == AUTO for k in names):
                for k in names:
                    del given[k]
                given[key] = recipe_value
        return given

    def provenance(self) -> dict[str, Any]:
        """The run config a signed model records: every setting but where this machine kept
        the run's output, keys and trust store (paths that say nothing about the model and
        name a host's directories, temporary ones included)."""
        return {k: v for k, v in self.to_run_config().items() if k not in MACHINE_LOCAL}

    def differences(self, recorded: Mapping[str, Any]) -> list[str]:
        """The keys whose value differs between these settings and a signed model's recorded
        `training` (a key only one side has counts as differing): a resume needs none."""
        own = self.provenance()
        return sorted(k for k in set(own) | set(recorded) if own.get(k) != recorded.get(k))

    @classmethod
    def changed(cls, given: Mapping[str, Any]) -> dict[str, Any]:
        """The given keys (run-config spelling) set to other than `auto` and the default."""
        return cls._changed(given)

    @classmethod
    def _changed(cls, given: Mapping[str, Any]) -> dict[str, Any]:
        """The given keys (run-config spelling) whose values are neither `auto` nor the
        field's default."""
        fields: dict[str, tuple[str, Any]] = {}
        for name, f in cls.model_fields.items():
            key = f.alias or name.replace("_", "-")
            for spelling in (name, key):
                fields[spelling] = (key, f.default)
        return {
            fields[k][0]: v
            for k, v in given.items()
            if k in fields and v != AUTO and v != fields[k][1]
        }

    @model_validator(mode="after")
    def _combinations(self) -> RunSettings:
        """Settings that cannot work together fail before anything runs."""
        problems = self._problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _problems(self) -> list[str]:
        return rules.combination_problems(self)

    def count_problems(self, n: int, source: str) -> list[str]:
        """What cannot work with exactly `n` institutions (`source`: where the count comes
        from, for the message)."""
        return rules.count_problems(self, n, source)

    @property
    def hierarchical_allowed(self) -> bool:
        """Whether the hierarchical prior may run: its deviations travel unprotected and its
        fits are exact only for the convex logistic models."""
        convex = self.model in ("logreg", "scorecard")
        return convex and self.privacy == "none" and self.aggregator == "fedavg"

    @property
    def personalization_method(self) -> Literal["ditto", "hierarchical", "trees"] | None:
        """What the final round runs (None: no personalisation)."""
        if self.model == "gbdt":
            return "trees" if self.personal_trees > 0 else None
        if self.finetune_epochs == 0:
            return None
        if self.personalization == "auto":
            return "hierarchical" if self.hierarchical_allowed else "ditto"
        return self.personalization

    @property
    def assumed_attackers_resolved(self) -> int:
        return assumed_attackers(self.assumed_attackers, self.attackers)

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> RunSettings:
        """Validated settings, or `SettingsError` naming every problem."""
        try:
            return cls.model_validate(dict(run_config))
        except ValidationError as exc:
            problems = "; ".join(
                (f"{'.'.join(map(str, e['loc']))}: " if e["loc"] else "")
                + (
                    unknown_key(str(e["loc"][0]))
                    if e["type"] == "extra_forbidden" and e["loc"]
                    else str(e["msg"]).removeprefix("Value error, ")
                )
                for e in exc.errors()
            )
            raise SettingsError(f"invalid run config: {problems}") from exc

    def to_run_config(self) -> dict[str, int | float | bool | str]:
        return self.model_dump(by_alias=True)

    def replaced(self, **changes: Any) -> RunSettings:
        """A copy with `changes` (field names or run-config keys), validated again: unlike
        `model_copy`, no rule is skipped."""
        config = self.to_run_config()
        for key, value in changes.items():
            alias = RunSettings.model_fields[key].alias if key in RunSettings.model_fields else None
            config[alias or key] = value
        return RunSettings.from_run_config(config)

    def for_institutions(self, n: int, source: str = "institutions taking part") -> RunSettings:
        """These settings for a run of exactly `n` institutions, all of which must join
        (`min-nodes`): the rules that need the count apply, else `SettingsError`.
        `institutions` stays as given: it also selects which of a dataset's institutions take
        part (0: all of them)."""
        problems = self.count_problems(n, source)
        if problems:
            raise SettingsError("invalid run config: " + "; ".join(problems))
        return self.replaced(min_nodes=n)

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
            split=self.split,
            hindsight_vintage=self.hindsight_vintage,
            max_file_mb=self.max_file_mb,
        )

    def run_dir(self, run_id: int) -> Path:
        """Where this run writes (OUT): `out-dir`, or ~/.jointcredit/runs/<run id>."""
        return Path(self.out_dir) if self.out_dir else default_run_dir(run_id)

    @property
    def join_seconds(self) -> float:
        """How long the nodes may take to join and answer the queries before training."""
        return self.join_timeout or self.round_timeout

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


def settings_for_dataset(settings: RunSettings) -> RunSettings:
    """`settings` for the institutions its dataset holds (reads only the catalog and the
    schema, no rows): what a simulation or sweep checks before it starts anything."""
    from jointcredit.data.catalog import resolve

    source = resolve(settings.data)
    schema = source.schema  # a bad schema file is refused here, before anything starts
    if settings.split == "time" and schema.time is None:
        raise SettingsError(
            f"invalid run config: split = time needs the schema's time column (time = "
            f'"column" in schema.toml), and the schema of {source.description} has no time'
        )
    return settings.for_institutions(len(source.ids), "the dataset's")


def setting_keys() -> list[str]:
    """Every run-config key as the files spell it (kebab case)."""
    return [field.alias or name for name, field in RunSettings.model_fields.items()]


def unknown_key(key: str) -> str:
    """What to say about a key that is not a setting: the nearest ones, if any are close."""
    near = difflib.get_close_matches(key.replace("_", "-"), setting_keys(), n=3, cutoff=0.6)
    hint = (
        f" (did you mean {' or '.join(near)}?)"
        if near
        else " (jointcredit simulate --help lists them)"
    )
    return f"not a setting{hint}"


def unknown_keys(config: Mapping[str, Any], where: str) -> list[str]:
    """A problem per key of `config` (field names or run-config keys) that is not a setting,
    named `where.key` (e.g. `base.round`, as the TOML file's table and key)."""
    known = set(setting_keys()) | set(RunSettings.model_fields)
    return [f"{where}.{key}: {unknown_key(key)}" for key in config if key not in known]


def canonical_keys(config: Mapping[str, Any]) -> dict[str, Any]:
    """Run-config keys as Flower and the files spell them (kebab case): a field name such as
    `learning_rate` becomes `learning-rate`, so a key is one key wherever it came from."""
    aliases = {name: field.alias for name, field in RunSettings.model_fields.items() if field.alias}
    out: dict[str, Any] = {}
    for key, value in config.items():
        canonical = aliases.get(key, key)
        if canonical in out:
            raise SettingsError(f"{canonical}: given twice ({key} and {canonical})")
        out[canonical] = value
    return out


def settings_schema() -> dict[str, Any]:
    """The settings' JSON schema as a run config is written: recipe keys and the model
    also take `auto`."""
    schema = RunSettings.model_json_schema(by_alias=True)
    for key in recipes.AUTO_KEYS:
        field = schema["properties"][key]
        schema["properties"][key] = {
            "anyOf": [{k: v for k, v in field.items() if k != "default"}, {"const": AUTO}],
            "default": AUTO,
            **({"description": field["description"]} if "description" in field else {}),
        }
    return schema
