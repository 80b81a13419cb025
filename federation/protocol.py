"""The Flower messages between the coordinator and the institutions, in one place.

    message       coordinator -> institution              institution -> coordinator
    query         config: SummaryQuery                    summary: SummaryRecord
    query.fairness_groups  config: FairnessGroupsQuery    fairness: FairnessGroupsRecord
    query.fairness_counts  arrays (the final model),      fairness-counts: the count vector
                  config: RoundConfig + FairnessCountsQuery
    (under secagg the counts are a SecAgg+ train round whose fit config is the query, the
    model's arrays as bytes: a masked vector)
    query.bin_grid    config: BinGridQuery                binning: BinningRecord (histograms)
    query.bin_counts  config: BinCountsQuery (the bins)   binning: BinningRecord (counts)
    (under secagg both are SecAgg+ train rounds whose fit config is the query: a masked vector)
    train         arrays (+ SCAFFOLD's control),          arrays (none when a DP budget is
                  config: RoundConfig                     spent), metrics: TrainMetrics
    query.prior   arrays, config: RoundConfig             prior-deviation (squared, per array)
    query.reference  arrays, config: RoundConfig,         reference: ReferenceRecord (its
                  reference-bins: ReferenceQuery          training rows per score band and
                  (after training: the final model)       feature bin, counts only)
    evaluate      arrays, config: RoundConfig             metrics: EvaluateMetrics
                  (+ prior-deviation: the federation's    (+ reference: ReferenceRecord, when
                  sum, in the final round; + reference-   asked)
                  bins: ReferenceQuery in the final
                  round outside secagg and DP, instead
                  of a query.reference exchange)
    train.histograms  (gradient-boosted trees, one per tree level)
                  config: TreeLevelConfig, tree: the      histograms: gradient and hessian
                  tree so far + the nodes to build        per node to build, feature and bin;
                  (+ previous-tree: the last finished     metrics: HistogramMetrics
                  tree, at a tree's first level)
    (under secagg the reference is a SecAgg+ train round whose fit config is the query, the
    model's arrays as bytes: the counts as one masked vector)
    (under secagg each level is a SecAgg+ train round whose fit config is the request, its
    tree records' arrays as bytes: the histograms as one masked vector of fixed-point digits,
    `jointcredit.federation.fixed_point`)

Every reply also carries `identity` (the institution's id) and the signature record that
`jointcredit.trust.updates` owns. `arrays`, `config`, `metrics`, `server-round` and
`proximal-mu` are the names Flower's strategies use; SecAgg+'s legacy workflow wraps config and
metrics as `fitins.config` and `fitres.metrics`. Nothing outside this module spells a record
name, config key, metric name, node-config key or node-state key (a test checks).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, Self

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MessageType, MetricRecord, RecordDict
from flwr.common import bytes_to_ndarray, ndarray_to_bytes
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jointcredit.trust.updates import IDENTITY_RECORD, SIGNATURE_RECORD

# -- message types
QUERY: Final = MessageType.QUERY
TRAIN: Final = MessageType.TRAIN
EVALUATE: Final = MessageType.EVALUATE
PRIOR_ACTION: Final = "prior"
PRIOR_QUERY: Final = f"{MessageType.QUERY}.{PRIOR_ACTION}"
# The binning phase (models that read agreed bins: the binned scorecard): each institution's
# histogram over the agreed fine grid, then its good/bad counts per agreed fine bin.
BIN_GRID_ACTION: Final = "bin_grid"
BIN_GRID_QUERY: Final = f"{MessageType.QUERY}.{BIN_GRID_ACTION}"
BIN_COUNTS_ACTION: Final = "bin_counts"
BIN_COUNTS_QUERY: Final = f"{MessageType.QUERY}.{BIN_COUNTS_ACTION}"
# Fairness after training (schemas with protected attributes): the groups each institution
# has, then its count vector on the agreed groups (a SecAgg+ round under `secagg`).
FAIRNESS_GROUPS_ACTION: Final = "fairness_groups"
FAIRNESS_GROUPS_QUERY: Final = f"{MessageType.QUERY}.{FAIRNESS_GROUPS_ACTION}"
FAIRNESS_COUNTS_ACTION: Final = "fairness_counts"
FAIRNESS_COUNTS_QUERY: Final = f"{MessageType.QUERY}.{FAIRNESS_COUNTS_ACTION}"
HISTOGRAMS_ACTION: Final = "histograms"
# After training: each institution's training rows per score band of the final model and per
# feature bin (the artifact's reference distribution for stability monitoring).
REFERENCE_ACTION: Final = "reference"
REFERENCE_QUERY: Final = f"{MessageType.QUERY}.{REFERENCE_ACTION}"
HISTOGRAMS_TRAIN: Final = f"{MessageType.TRAIN}.{HISTOGRAMS_ACTION}"

# -- records of a message's content
ARRAYS: Final = "arrays"
CONFIG: Final = "config"
METRICS: Final = "metrics"
SUMMARY: Final = "summary"
BINNING: Final = "binning"
PRIOR: Final = "prior-deviation"
REFERENCE: Final = "reference"
REFERENCE_BINS: Final = "reference-bins"
IDENTITY: Final = IDENTITY_RECORD
SIGNATURE: Final = SIGNATURE_RECORD
LEGACY_CONFIG: Final = "fitins.config"
LEGACY_METRICS: Final = "fitres.metrics"
# Under SCAFFOLD the control variate rides in the `arrays` record, each tensor under this
# prefix + its parameter's name (Flower's strategies accept exactly one ArrayRecord).
CONTROL_PREFIX: Final = "scaffold-control/"
# Gradient-boosted trees: the tree grown so far (its node arrays and `build`, the nodes whose
# histograms are asked for), the last finished tree, and a reply's histograms.
TREE: Final = "tree"
PREVIOUS_TREE: Final = "previous-tree"
TREE_NODES: Final = "tree-nodes"  # int64 (nodes, 5): feature, threshold, default-left, children
TREE_VALUES: Final = "tree-values"  # float64 (nodes, 2): leaf value, cover
TREE_CATEGORIES: Final = "tree-categories"  # bool (nodes, width): categories sent left
BUILD: Final = "build"
HISTOGRAMS: Final = "histograms"

# -- weights Flower's strategies average replies by
NUM_EXAMPLES: Final = "num-examples"
SCORE_BAND_GOODS: Final = "score-band-goods"
SCORE_BAND_BADS: Final = "score-band-bads"
UNIT_WEIGHT: Final = "unit-weight"  # institution-level DP: every institution weighs the same

# -- node config (simulation: Flower's partition ids; deployment: `--node-config`)
PARTITION_ID: Final = "partition-id"
NUM_PARTITIONS: Final = "num-partitions"
DATA_FILE: Final = "data-file"
NODE_SCHEMA: Final = "schema"
INSTITUTION: Final = "institution"
SIGNING_KEY: Final = "signing-key"
SIGNING_KEY_PASSPHRASE_ENV: Final = "signing-key-passphrase-env"
# Where the node keeps, signed, what must survive a crash of either side (`client.durable`).
STATE_DIR: Final = "state-dir"
NODE_TRUST_STORE: Final = "trust-store"  # the kit's trust store (vertical parties check relays)
# A vertical scorecard's feature party: the fewest rows a non-empty cell of its coarse pair
# tables may hold (at least 5 when set; unset: not checked).
PAIR_MIN_ROWS: Final = "pair-min-rows"
# A deployed label party takes `split = time` only when its own node config allows it.
ALLOW_TIME_SPLIT: Final = "allow-time-split"
# A deployed label party sends its fairness figures only when its own node config says so.
SHARE_FAIRNESS: Final = "share-fairness"
# The node-config keys an institution sets for itself (`jointcredit node start --node-config`).
NODE_OPTIONS: Final = (PAIR_MIN_ROWS, ALLOW_TIME_SPLIT, SHARE_FAIRNESS)

# -- what an institution keeps in its Flower node state between messages
STATE_SCAFFOLD: Final = "scaffold-control"  # its own control variate c_i
STATE_RECORD_DP: Final = "jc-record-dp"  # its DP-SGD plan and accountant history
STATE_RECORD_DP_HISTORY: Final = "history"  # (in that record) the steps taken so far
STATE_PRIOR: Final = PRIOR  # the squared deviation it sent with query.prior
STATE_PRIOR_MODEL: Final = "prior-own-model"  # which global model that deviation is of
STATE_PRIOR_MODEL_DIGEST: Final = "model-sha256"  # (in that record) the model's digest
STATE_ADVERSARY_REPLAY: Final = "adversary-replay-"  # simulation: a replaying node's old reply
# Gradient-boosted trees: its rows' margins after the trees so far (arrays), and which bins
# and which ensemble they belong to (config).
STATE_TREE_MARGINS: Final = "jc-tree-margins"
STATE_TREE_RUN: Final = "jc-tree-run"
MARGINS: Final = "margins"


class ProtocolError(ValueError):
    """A message or record that does not follow the protocol."""


class _Record(BaseModel):
    """A flat record with kebab-case keys; unknown keys are refused."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    def values(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)

    @classmethod
    def parse(cls, values: Mapping[str, Any], what: str = "") -> Self:
        try:
            return cls.model_validate(dict(values))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            raise ProtocolError(f"{what or cls.__name__}: {problems}") from None


class _Config(_Record):
    def to_record(self) -> ConfigRecord:
        return ConfigRecord(self.values())


class _Metrics(_Record):
    def to_record(self) -> MetricRecord:
        return MetricRecord(self.values())


def _key(alias: str, default: Any = None) -> Any:
    return Field(default, alias=alias)


class SummaryQuery(_Config):
    """The preprocessing query: how much of its category counts a node may report."""

    max_categories: int = _key("max-categories", ...)
    min_category_count: int = _key("min-category-count", ...)


class SummaryRecord(_Config):
    """A node's answer: its summary and schema, each as JSON."""

    summary: str = _key("json", ...)
    data_schema: str = _key(NODE_SCHEMA, ...)


GRID_DIGITS: Final = "grid-digits"
BINS_DIGEST: Final = "bins-digest"
BINS_JSON: Final = "bins-json"


class BinGridQuery(_Config):
    """The fine-grid query: the grid's resolution (significant digits of its boundaries)."""

    grid_digits: int = _key(GRID_DIGITS, ...)


class BinCountsQuery(_Config):
    """The counts query: the agreed fine bins (a `BinningSpec`, as JSON)."""

    bins: str = _key(BINS_JSON, ...)


def binning_sum_request(config: Mapping[str, Any]) -> BinGridQuery | BinCountsQuery | None:
    """Under `secagg` the binning rounds are SecAgg+ rounds whose fit config is one of these
    queries: the institution sends its counts as a masked vector instead of training. None
    for a training round's config."""
    if GRID_DIGITS in config:
        return BinGridQuery.parse(config, "fine-grid sum")
    if BINS_JSON in config:
        return BinCountsQuery.parse(config, "bin counts sum")
    return None


class BinningRecord(_Config):
    """A node's binning answer (its grid histogram or its bin counts), as JSON."""

    payload: str = _key("json", ...)


class ReferenceQuery(_Config):
    """The reference query's bins (a `BinningSpec`, as JSON), beside the final model."""

    bins: str = _key(REFERENCE_BINS, ...)


class ReferenceRecord(_Config):
    """A node's reference counts (JSON list of whole numbers; layout:
    `jointcredit.models.reference`)."""

    counts: str = _key("json", ...)


FAIRNESS: Final = "fairness"
FAIRNESS_COUNTS: Final = "fairness-counts"
FAIRNESS_PROTECTED: Final = "fairness-protected"
FAIRNESS_LAYOUT: Final = "fairness-groups"
FAIRNESS_MODEL_PREFIX: Final = "fairness-model/"


class FairnessGroupsQuery(_Config):
    """Which groups of these protected attributes (JSON list) the institution's test rows hold."""

    protected: str = _key(FAIRNESS_PROTECTED, ...)


class FairnessGroupsRecord(_Config):
    """The answer: {attribute: [group, ...]} as JSON."""

    payload: str = _key("json", ...)


class FairnessCountsQuery(_Config):
    """The agreed groups (a `GroupLayout`, JSON) and the policy's cut-offs. Rides beside the
    `RoundConfig` (preprocessing, bins) of the final model in the same config record."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    layout: str = _key(FAIRNESS_LAYOUT, ...)


class RoundConfig(_Config):
    """The config of a train, evaluate or query.prior message. Flower's strategies add
    `server-round`, FedProx `proximal-mu`, client-side DP clipping the clipping norm; the final
    evaluate message asks for personalisation (and under the hierarchical prior says how many
    institutions its sum covers)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    preprocessing: str
    server_round: int | None = _key("server-round")
    proximal_mu: float | None = _key("proximal-mu")
    clipping_norm: float | None = _key(KEY_CLIPPING_NORM)
    finetune_epochs: int | None = _key("finetune-epochs")
    prior_count: int | None = _key("prior-count")
    bins: str | None = _key("bins")  # gradient-boosted trees: the agreed bins (JSON)
    personal_trees: int | None = _key("personal-trees")  # trees: each one's own extra trees
    # Train: the run's lineage (one id over the run and its resumes: what an institution's
    # durable state is bound to) and the checkpoint round it resumed after (0: never resumed).
    lineage: str | None = _key("lineage")
    resumed_from: int | None = _key("resumed-from")


class TrainMetrics(_Metrics):
    """A train reply's metrics: the weight, the loss, and what privacy and SCAFFOLD report."""

    num_examples: int = _key(NUM_EXAMPLES, ...)
    train_loss: float | None = _key("train-loss")
    unit_weight: float | None = _key(UNIT_WEIGHT)
    # 1: corrected with its own c_i from the last round; 0: with zero (first round, lost state).
    scaffold_own_control: float | None = _key("scaffold-own-control")
    # Record-level DP, each institution's own accounting (-1: epsilon infinite, no noise).
    dp_epsilon: float | None = _key("dp-epsilon")
    dp_steps: float | None = _key("dp-steps")
    dp_planned_steps: float | None = _key("dp-planned-steps")
    dp_noise_multiplier: float | None = _key("dp-noise-multiplier")
    dp_sample_rate: float | None = _key("dp-sample-rate")
    dp_exhausted: float | None = _key("dp-exhausted")
    # Trees under secagg: the seconds this institution's histogram work for the level took.
    histogram_seconds: float | None = _key("histogram-seconds")

    @property
    def withheld(self) -> bool:
        """A reply that deliberately carries no update: the DP budget is spent."""
        return self.dp_steps == 0

    @property
    def epsilon(self) -> float | None:
        """Record-level DP: epsilon spent so far (None: no noise, or not reported)."""
        e = self.dp_epsilon
        return None if e is None or e < 0 or not math.isfinite(e) else e


class EvaluateMetrics(_Metrics):
    """An evaluate reply's metrics on the institution's own test split (NaN: undefined, e.g.
    one class), of the global model and, in the final round, of its personalised copy."""

    num_examples: int = _key(NUM_EXAMPLES, ...)
    auc: float
    ks: float
    brier: float
    unit_weight: float | None = _key(UNIT_WEIGHT)
    auc_personalized: float | None = _key("auc-personalized")
    ks_personalized: float | None = _key("ks-personalized")
    brier_personalized: float | None = _key("brier-personalized")
    # Ditto's chosen proximal strength; -1: the unchanged global model won.
    personalized_mu: float | None = _key("personalized-mu")
    # The global model's goods and bads per score band (`models/score_bands.py`): counts only,
    # for the validation report's curves.
    score_band_goods: list[int] | None = _key(SCORE_BAND_GOODS)
    score_band_bads: list[int] | None = _key(SCORE_BAND_BADS)


class TreeLevelConfig(_Config):
    """One tree level's request. `ensemble`: the digest of the trees finished before this one
    (an institution's margins must belong to them); `bins`, `bins-digest`: the agreed bins
    (their JSON only with the run's first request) and `base-margin` the starting log-odds."""

    server_round: int = _key("server-round", ...)
    tree: int = _key("tree", ...)
    level: int = _key("level", ...)
    ensemble: str = _key("ensemble", ...)
    bins_digest: str = _key(BINS_DIGEST, ...)
    bins: str | None = _key("bins")
    base_margin: float | None = _key("base-margin")


class TreeRunState(_Config):
    """What an institution keeps between tree levels beside its margins: the bins and the
    ensemble its margins belong to."""

    bins: str
    bins_digest: str = _key(BINS_DIGEST, ...)
    ensemble: str


class HistogramMetrics(_Metrics):
    """A histogram reply's metrics: the rows behind it and the seconds its work took."""

    num_examples: int = _key(NUM_EXAMPLES, ...)
    histogram_seconds: float = _key("histogram-seconds", ...)


@dataclass(frozen=True)
class TreeLevelMessage:
    """What the coordinator sends for one tree level."""

    config: TreeLevelConfig
    tree: ArrayRecord
    previous: ArrayRecord | None = None

    def to_content(self) -> RecordDict:
        return _content(self.config, TREE, self.tree, PREVIOUS_TREE, self.previous)

    @classmethod
    def from_content(cls, content: RecordDict) -> TreeLevelMessage:
        tree, config, previous = _parts(content, TREE, PREVIOUS_TREE, "a tree level message")
        return cls(TreeLevelConfig.parse(config, "tree level config"), tree, previous)


TREE_LEVEL_SUM_PREFIX: Final = "records/"


def tree_level_sum_config(message: TreeLevelMessage) -> dict[str, Any]:
    """Under `secagg` a tree level is a SecAgg+ round whose fit config is the level's request:
    its config, and each array of its tree records as bytes (a legacy fit config holds
    scalars and bytes only)."""
    values: dict[str, Any] = message.config.values()
    for name, record in ((TREE, message.tree), (PREVIOUS_TREE, message.previous)):
        for key, array in (record or ArrayRecord()).items():
            values[f"{TREE_LEVEL_SUM_PREFIX}{name}/{key}"] = ndarray_to_bytes(array.numpy())
    return values


def tree_level_sum_request(config: Mapping[str, Any]) -> TreeLevelMessage | None:
    """The tree level a SecAgg+ fit config asks for (`tree_level_sum_config`); None for
    another round's config."""
    if BINS_DIGEST not in config:
        return None
    records: dict[str, dict[str, Array]] = {TREE: {}, PREVIOUS_TREE: {}}
    plain: dict[str, Any] = {}
    for key, value in config.items():
        if not key.startswith(TREE_LEVEL_SUM_PREFIX):
            plain[key] = value
            continue
        name, _, array = key.removeprefix(TREE_LEVEL_SUM_PREFIX).partition("/")
        if name not in records or not array or not isinstance(value, bytes):
            raise ProtocolError(f"tree level sum: unexpected key {key}")
        records[name][array] = Array(bytes_to_ndarray(value))
    if not records[TREE]:
        raise ProtocolError("tree level sum: the request carries no tree")
    previous = ArrayRecord(array_dict=records[PREVIOUS_TREE]) if records[PREVIOUS_TREE] else None
    config_record = TreeLevelConfig.parse(plain, "tree level sum config")
    return TreeLevelMessage(config_record, ArrayRecord(array_dict=records[TREE]), previous)


def histogram_reply(
    institution: str, histograms: ArrayRecord, metrics: HistogramMetrics
) -> RecordDict:
    return RecordDict(
        {
            HISTOGRAMS: histograms,
            METRICS: metrics.to_record(),
            IDENTITY: identity_record(institution),
        }
    )


def histogram_arrays(content: RecordDict) -> ArrayRecord:
    if HISTOGRAMS not in content.array_records:
        raise ProtocolError("a histogram reply needs its histograms record")
    return content.array_records[HISTOGRAMS]


class NodeConfig(_Record):
    """A node's own configuration. Simulation: Flower's partition ids. Deployment: which file,
    schema, institution id and signing key (`flower-supernode --node-config`). Other keys are
    the operator's (a SuperNode may serve other apps too) and are left alone."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    partition_id: int | None = _key(PARTITION_ID)
    num_partitions: int | None = _key(NUM_PARTITIONS)
    data_file: str | None = _key(DATA_FILE)
    schema_file: str | None = _key(NODE_SCHEMA)
    institution: str | None = _key(INSTITUTION)
    signing_key: str | None = _key(SIGNING_KEY)
    signing_key_passphrase_env: str | None = _key(SIGNING_KEY_PASSPHRASE_ENV)
    state_dir: str | None = _key(STATE_DIR)
    trust_store: str | None = _key(NODE_TRUST_STORE)
    # Floored at 5 where it is used; the bound is the label party's (scorecard.checks).
    pair_min_rows: Annotated[int | None, Field(ge=1, le=1_000_000)] = _key(PAIR_MIN_ROWS)
    allow_time_split: bool | None = _key(ALLOW_TIME_SPLIT)
    share_fairness: bool | None = _key(SHARE_FAIRNESS)

    @property
    def simulated(self) -> bool:
        return self.data_file is None


def identity_record(institution: str) -> ConfigRecord:
    return ConfigRecord({INSTITUTION: institution})


def claimed_institution(content: RecordDict) -> str | None:
    """The institution a reply says it comes from (unverified)."""
    record = content.config_records.get(IDENTITY)
    return None if record is None else str(record.get(INSTITUTION))


def round_config(content: RecordDict) -> RoundConfig | None:
    """A message's round config (Message API or SecAgg+'s legacy record), if any."""
    records = content.config_records
    record = records.get(CONFIG) or records.get(LEGACY_CONFIG)
    if record is None or "preprocessing" not in record:
        return None
    return RoundConfig.parse(record, "round config")


def server_round(content: RecordDict) -> int | None:
    """The round a message belongs to; None when it carries none (the preprocessing query,
    SecAgg+'s key-sharing stages)."""
    records = content.config_records
    record = records.get(CONFIG) or records.get(LEGACY_CONFIG)
    value = None if record is None else record.get("server-round")
    return int(value) if isinstance(value, int) else None


def numbers(content: RecordDict) -> dict[str, float]:
    """Every number of a reply's metrics record (or SecAgg+'s legacy one; the legacy wrapping
    adds records of its own, such as Flower's example count, which are not ours)."""
    values: dict[str, float] = {}
    records: list[Mapping[str, Any]] = []
    if METRICS in content.metric_records:
        records.append(content.metric_records[METRICS])
    legacy = content.config_records.get(LEGACY_METRICS)
    if legacy is not None:
        records.append(legacy)
    for record in records:
        for k, v in record.items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                values[k] = float(v)
    return values


def score_bands(content: RecordDict) -> tuple[list[int], list[int]] | None:
    """An evaluate reply's (goods, bads) per score band, when it carries them."""
    record = content.metric_records.get(METRICS)
    if record is None:
        return None
    goods, bads = record.get(SCORE_BAND_GOODS), record.get(SCORE_BAND_BADS)
    if not isinstance(goods, list) or not isinstance(bads, list) or len(goods) != len(bads):
        return None
    return [int(v) for v in goods], [int(v) for v in bads]


@dataclass(frozen=True)
class ModelMessage:
    """What the coordinator sends with a model: train, evaluate and query.prior."""

    arrays: ArrayRecord
    config: RoundConfig
    prior: ArrayRecord | None = None  # the federation's deviation sum (final evaluate only)

    def to_content(self) -> RecordDict:
        return _content(self.config, ARRAYS, self.arrays, PRIOR, self.prior)

    @classmethod
    def from_content(cls, content: RecordDict) -> ModelMessage:
        arrays, config, prior = _parts(content, ARRAYS, PRIOR, "a model message")
        return cls(arrays, RoundConfig.parse(config, "round config"), prior)


def _content(
    config: _Config, name: str, arrays: ArrayRecord, extra: str, more: ArrayRecord | None
) -> RecordDict:
    """A coordinator message: its config, its arrays and, when given, more arrays."""
    content = RecordDict({name: arrays, CONFIG: config.to_record()})
    if more is not None:
        content[extra] = more
    return content


def _parts(
    content: RecordDict, name: str, extra: str, what: str
) -> tuple[ArrayRecord, ConfigRecord, ArrayRecord | None]:
    if name not in content.array_records or CONFIG not in content.config_records:
        raise ProtocolError(f"{what} needs its {name} and config records")
    return (
        content.array_records[name],
        content.config_records[CONFIG],
        content.array_records.get(extra),
    )


def summary_query(query: SummaryQuery) -> RecordDict:
    return RecordDict({CONFIG: query.to_record()})


def parse_summary_query(content: RecordDict) -> SummaryQuery:
    return SummaryQuery.parse(content.config_records[CONFIG], "preprocessing query")


def summary_reply(institution: str, summary: SummaryRecord) -> RecordDict:
    return RecordDict({SUMMARY: summary.to_record(), IDENTITY: identity_record(institution)})


def parse_summary_reply(content: RecordDict) -> SummaryRecord:
    if SUMMARY not in content.config_records:
        raise ProtocolError("a preprocessing reply needs its summary record")
    return SummaryRecord.parse(content.config_records[SUMMARY], "summary")


def bin_grid_query(query: BinGridQuery) -> RecordDict:
    return RecordDict({CONFIG: query.to_record()})


def parse_bin_grid_query(content: RecordDict) -> BinGridQuery:
    return BinGridQuery.parse(content.config_records[CONFIG], "fine-grid query")


def bin_counts_query(query: BinCountsQuery) -> RecordDict:
    return RecordDict({CONFIG: query.to_record()})


def parse_bin_counts_query(content: RecordDict) -> BinCountsQuery:
    return BinCountsQuery.parse(content.config_records[CONFIG], "bin counts query")


def binning_reply(institution: str, record: BinningRecord) -> RecordDict:
    return RecordDict({BINNING: record.to_record(), IDENTITY: identity_record(institution)})


def parse_binning_reply(content: RecordDict) -> BinningRecord:
    if BINNING not in content.config_records:
        raise ProtocolError("a binning reply needs its binning record")
    return BinningRecord.parse(content.config_records[BINNING], "binning")


def fairness_groups_query(query: FairnessGroupsQuery) -> RecordDict:
    return RecordDict({CONFIG: query.to_record()})


def parse_fairness_groups_query(content: RecordDict) -> FairnessGroupsQuery:
    return FairnessGroupsQuery.parse(content.config_records[CONFIG], "fairness groups query")


def fairness_groups_reply(institution: str, record: FairnessGroupsRecord) -> RecordDict:
    return RecordDict({FAIRNESS: record.to_record(), IDENTITY: identity_record(institution)})


def parse_fairness_groups_reply(content: RecordDict) -> FairnessGroupsRecord:
    if FAIRNESS not in content.config_records:
        raise ProtocolError("a fairness groups reply needs its fairness record")
    return FairnessGroupsRecord.parse(content.config_records[FAIRNESS], "fairness groups")


def fairness_counts_query(
    arrays: ArrayRecord, config: RoundConfig, query: FairnessCountsQuery
) -> RecordDict:
    return RecordDict({ARRAYS: arrays, CONFIG: ConfigRecord({**config.values(), **query.values()})})


def parse_fairness_counts_query(
    content: RecordDict,
) -> tuple[ModelMessage, FairnessCountsQuery]:
    arrays, config, _ = _parts(content, ARRAYS, PRIOR, "a fairness counts query")
    return (
        ModelMessage(arrays, RoundConfig.parse(config, "round config")),
        FairnessCountsQuery.parse(config, "fairness counts query"),
    )


def fairness_counts_reply(institution: str, counts: np.ndarray) -> RecordDict:
    record = ArrayRecord({FAIRNESS_COUNTS: Array(np.ascontiguousarray(counts, dtype=np.int64))})
    return RecordDict({FAIRNESS_COUNTS: record, IDENTITY: identity_record(institution)})


def parse_fairness_counts_reply(content: RecordDict) -> np.ndarray:
    record = content.array_records.get(FAIRNESS_COUNTS)
    if record is None or FAIRNESS_COUNTS not in record:
        raise ProtocolError("a fairness counts reply needs its counts")
    out: np.ndarray = record[FAIRNESS_COUNTS].numpy()
    return out


def fairness_sum_config(
    arrays: ArrayRecord, config: RoundConfig, query: FairnessCountsQuery
) -> dict[str, Any]:
    """Under `secagg` the counts are a SecAgg+ round whose fit config is the query: the round
    config, the layout, and each of the model's arrays as bytes (a legacy fit config holds
    scalars and bytes only)."""
    values: dict[str, Any] = {**config.values(), **query.values()}
    for key, array in arrays.items():
        values[f"{FAIRNESS_MODEL_PREFIX}{key}"] = ndarray_to_bytes(array.numpy())
    return values


def fairness_sum_request(
    config: Mapping[str, Any],
) -> tuple[ModelMessage, FairnessCountsQuery] | None:
    """The fairness counts a SecAgg+ fit config asks for (`fairness_sum_config`); None for
    another round's config."""
    if FAIRNESS_LAYOUT not in config:
        return None
    arrays: dict[str, Array] = {}
    plain: dict[str, Any] = {}
    for key, value in config.items():
        if not key.startswith(FAIRNESS_MODEL_PREFIX):
            plain[key] = value
        elif isinstance(value, bytes):
            arrays[key.removeprefix(FAIRNESS_MODEL_PREFIX)] = Array(bytes_to_ndarray(value))
        else:
            raise ProtocolError(f"fairness counts sum: unexpected key {key}")
    model = ModelMessage(ArrayRecord(array_dict=arrays), RoundConfig.parse(plain, "round config"))
    return model, FairnessCountsQuery.parse(plain, "fairness counts sum")


def train_reply(institution: str, metrics: TrainMetrics, arrays: ArrayRecord | None) -> RecordDict:
    content = RecordDict({METRICS: metrics.to_record(), IDENTITY: identity_record(institution)})
    if arrays is not None:
        content[ARRAYS] = arrays
    return content


def evaluate_reply(institution: str, metrics: EvaluateMetrics) -> RecordDict:
    return RecordDict({METRICS: metrics.to_record(), IDENTITY: identity_record(institution)})


def prior_reply(institution: str, deviation: ArrayRecord) -> RecordDict:
    return RecordDict({PRIOR: deviation, IDENTITY: identity_record(institution)})


def reply_arrays(content: RecordDict) -> ArrayRecord | None:
    return content.array_records.get(ARRAYS)


def prior_of(content: RecordDict) -> ArrayRecord | None:
    return content.array_records.get(PRIOR)


def check_metrics(message_type: str, content: RecordDict) -> None:
    """Raise `ProtocolError` unless a reply's metrics follow the protocol: every evaluate reply
    carries `EvaluateMetrics`; a train reply that carries metrics (SecAgg+'s key-sharing
    stages carry none) carries `TrainMetrics`."""
    carries = METRICS in content.metric_records or LEGACY_METRICS in content.config_records
    if message_type == EVALUATE:
        EvaluateMetrics.parse(numbers(content), "evaluation metrics")
    elif message_type == HISTOGRAMS_TRAIN:
        HistogramMetrics.parse(numbers(content), "histogram metrics")
    elif message_type == TRAIN and carries:
        TrainMetrics.parse(numbers(content), "training metrics")


def withheld(content: RecordDict) -> bool:
    """A train reply without an update because the institution's DP budget is spent."""
    return not content.array_records and numbers(content).get("dp-steps") == 0


def reference_query(model: ModelMessage, query: ReferenceQuery) -> RecordDict:
    content = model.to_content()
    content[REFERENCE_BINS] = query.to_record()
    return content


def parse_reference_query(content: RecordDict) -> tuple[ModelMessage, ReferenceQuery]:
    if REFERENCE_BINS not in content.config_records:
        raise ProtocolError("a reference query needs its reference-bins record")
    query = ReferenceQuery.parse(content.config_records[REFERENCE_BINS], "reference bins")
    return ModelMessage.from_content(content), query


def ask_reference(content: RecordDict, query: ReferenceQuery) -> RecordDict:
    """The final evaluate message asking for the reference counts too (outside `secagg` and
    DP, where they are plain counts anyway): one exchange after training instead of two."""
    content[REFERENCE_BINS] = query.to_record()
    return content


def asked_reference(content: RecordDict) -> ReferenceQuery | None:
    """The reference an evaluate message asks for with its metrics (`ask_reference`)."""
    if REFERENCE_BINS not in content.config_records:
        return None
    return ReferenceQuery.parse(content.config_records[REFERENCE_BINS], "reference bins")


def add_reference(content: RecordDict, record: ReferenceRecord) -> RecordDict:
    """An evaluate reply carrying the reference counts it was asked for."""
    content[REFERENCE] = record.to_record()
    return content


def reference_reply(institution: str, record: ReferenceRecord) -> RecordDict:
    return RecordDict({REFERENCE: record.to_record(), IDENTITY: identity_record(institution)})


def parse_reference_reply(content: RecordDict) -> ReferenceRecord:
    if REFERENCE not in content.config_records:
        raise ProtocolError("a reference reply needs its reference record")
    return ReferenceRecord.parse(content.config_records[REFERENCE], "reference")


REFERENCE_SUM_PREFIX: Final = "reference-arrays/"


def reference_sum_config(model: ModelMessage, query: ReferenceQuery) -> dict[str, Any]:
    """Under `secagg` the reference round is a SecAgg+ round whose fit config is the query:
    the model's config, the bins, and each of the model's arrays as bytes."""
    values: dict[str, Any] = {**model.config.values(), **query.values()}
    for key, array in model.arrays.items():
        values[f"{REFERENCE_SUM_PREFIX}{key}"] = ndarray_to_bytes(array.numpy())
    return values


def reference_sum_request(config: Mapping[str, Any]) -> tuple[ModelMessage, ReferenceQuery] | None:
    """The reference a SecAgg+ fit config asks for (`reference_sum_config`); None for another
    round's config."""
    if REFERENCE_BINS not in config:
        return None
    arrays: dict[str, Array] = {}
    plain: dict[str, Any] = {}
    for key, value in config.items():
        if key == REFERENCE_BINS:
            continue
        if not key.startswith(REFERENCE_SUM_PREFIX):
            plain[key] = value
        elif isinstance(value, bytes):
            arrays[key.removeprefix(REFERENCE_SUM_PREFIX)] = Array(bytes_to_ndarray(value))
        else:
            raise ProtocolError(f"reference sum: unexpected key {key}")
    query = ReferenceQuery.parse({REFERENCE_BINS: config[REFERENCE_BINS]}, "reference sum")
    model = ModelMessage(ArrayRecord(array_dict=arrays), RoundConfig.parse(plain, "reference sum"))
    return model, query
