"""The vertical federation's contract between the coordinator and the parties' nodes: its run
settings (`VerticalSettings`, the same run-config keys as `RunSettings` where they mean the
same) and the wire: message types, record names, actions and the relay's keys.

Every message carries the step it belongs to as `server-round` in `protocol.CONFIG` (so a
reply's signature binds it, and the verifiers of the horizontal path check it unchanged), and
what it asks for in the `vertical` ConfigRecord (`ACTION`, and for the label party's requests
the feature party they go to). Payloads are NumPy arrays in the `payload` ArrayRecord. A
feature party's reply reaches the label party whole: each of its records under `RELAY_PREFIX`
+ its name, so the label party checks the feature party's own signature (end to end: the
coordinator cannot change what it relays without the signature failing).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MessageType, RecordDict
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from jointcredit.federation import protocol
from jointcredit.federation.settings import RunSettings, SettingsError, default_run_dir
from jointcredit.trust.keyset import RUN_KEYS_SUBDIR, TRUST_FILE
from jointcredit.trust.updates import content_parts

LAYOUT: Final = "layout"
VERTICAL: Final = "vertical"

# -- message types (Flower's kinds with our own suffix)
HELLO_ACTION: Final = "vertical_hello"  # every node: which party are you
PSI_ACTION: Final = "vertical_psi"  # PSI's steps, both roles
STEP_ACTION: Final = "vertical_step"  # the label party: its next request, or done
SERVE_ACTION: Final = "vertical_serve"  # a feature party: answer the label party's request
HELLO: Final = f"{MessageType.QUERY}.{HELLO_ACTION}"
PSI: Final = f"{MessageType.QUERY}.{PSI_ACTION}"
STEP: Final = f"{MessageType.TRAIN}.{STEP_ACTION}"
SERVE: Final = f"{MessageType.TRAIN}.{SERVE_ACTION}"

# -- records
REQUEST: Final = "vertical"  # ConfigRecord: ACTION, PARTY, ...
PAYLOAD: Final = "payload"  # ArrayRecord
RELAY_PREFIX: Final = "relay/"
ACTION: Final = "action"
PARTY: Final = "party"
ROLE: Final = "role"
RELAY_NODE: Final = "relay-node"  # the feature party's node id, beside a relayed reply
RELAY_STEP: Final = "relay-step"  # ...and the step it answered
# A feature party's answer: the SHA-256 of the label party's request it answers
# (`request_digest`), so the label party takes an answer only to what it asked.
REQUEST_SHA256: Final = "request-sha256"
INDEX: Final = "index"  # the label party's aligned rows for a feature party: its index

# -- actions
LABEL_ROLE: Final = "label"
FEATURE_ROLE: Final = "feature"
PSI_BLIND: Final = "psi-blind"  # label party: its blinded set for one feature party
PSI_REBLIND: Final = "psi-reblind"  # feature party: own blinded set, the label party's reblinded
PSI_INTERSECT: Final = "psi-intersect"  # label party: intersect with one feature party
PSI_ALIGN: Final = "psi-align"  # label party: one feature party's aligned rows, its index
PSI_ALIGNED: Final = "psi-aligned"  # feature party: take its aligned rows; reply its columns
START: Final = "start"  # label party: start training (every feature party's columns relayed)
NEXT: Final = "next"  # label party: a feature party's answer to its last request
DONE: Final = "done"  # label party's reply: training, evaluation and its part written
GRADIENTS: Final = "gradients"
HISTOGRAMS: Final = "histograms"
SPLIT: Final = "split"
SIDES: Final = "sides"
WRITE_PART: Final = "write-part"
# The vertical scorecard's steps (`models.vertical.scorecard`), in this order, each once; a
# feature party's answers:
SC_COLUMNS: Final = "scorecard-columns"  # its fine bins' rows (the label party's key sent)
SC_TABLES: Final = "scorecard-tables"  # the label party's ciphertexts summed per fine bin
SC_COARSE: Final = "scorecard-coarse"  # its features' pairs' joint coarse-code counts (maps sent)
SC_TEST_CODES: Final = "scorecard-test-codes"  # its coarse codes of the aligned test rows
# Two feature parties' cross table, after both coarse steps: the label party asks one (PARTY)
# to sum another's (PEER) coarse codes; the coordinator relays the request to the peer first,
# whose answer (SC_CROSS_SLOTS: its coarse one-hots encrypted under the label party's key)
# it relays with the request to the party, never to the label party; the party answers the
# sums per its coarse codes (SC_CROSS).
SC_CROSS: Final = "scorecard-cross"
SC_CROSS_SLOTS: Final = "scorecard-cross-slots"
PEER: Final = "peer"
# (between SC_COARSE and SC_TEST_CODES: WRITE_PART, with the same merge maps)
# The coordinator to every party when a run fails (a party silent past the step timeout, a
# rejected reply): drop the run's session now (`train.vertical_step` to the label party,
# `train.vertical_serve` to a feature party). It needs no party's signature: the coordinator
# can end a run anyway, by sending nothing more.
ABORT: Final = "abort"
ABORT_SECONDS: Final = 10.0  # at most this long waiting for the parties to confirm an abort

# -- payload arrays and request values
BLINDED: Final = "blinded"
REBLINDED: Final = "reblinded"
POSITIONS: Final = "positions"
ORDER: Final = "order"
TRAIN_ROWS: Final = "train-rows"
N_BINS: Final = "n-bins"
MISSING: Final = "missing"
SPECIAL: Final = "special"
CATEGORICAL: Final = "categorical"
PUBLIC_KEY: Final = "public-key"
CIPHERTEXTS: Final = "ciphertexts"
ROWS: Final = "rows"
SLOT: Final = "slot"
N_SLOTS: Final = "n-slots"
NODE_PREFIX: Final = "node/"
BUCKETS: Final = "buckets"
FEATURE: Final = "feature"
THRESHOLD: Final = "threshold"
DEFAULT_LEFT: Final = "default-left"
SPECIAL_LEFT: Final = "special-left"
CATEGORY_LEFT: Final = "category-left"
SPLIT_ID: Final = "split-id"
LEFT: Final = "left"
PART_SHA256: Final = "part-sha256"
NAMES: Final = "names"
REGULAR: Final = "regular"
COLUMNS: Final = "columns"
PAIRS: Final = "pairs"
# With the pair tables: the feature party's `pair-min-rows` (0: unset), for its cross tables.
PAIR_FLOOR: Final = "pair-floor"
CODES: Final = "codes"
# A scorecard's coarse and write-part requests: the merge maps, one row per feature padded
# with -1.
MERGE: Final = "merge-maps"
SIZE: Final = "size"
# The label party's final reply: metrics of the federated model on the aligned test rows,
# and, for a schema with protected attributes, the fairness figures of its held-out rows
# (`federation.fairness.Fairness` as JSON, checked by `federation.vertical_fairness`).
METRIC_PREFIX: Final = "metric/"
FAIRNESS: Final = "fairness"


class VerticalSettings(BaseModel):
    """A vertical run's settings, under `RunSettings`' run-config keys where they mean the
    same (defaults: FATE's quality configuration, 30 trees of depth 3 on 32 bins)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    layout: Literal["vertical"] = VERTICAL
    dataset: str = "synthetic-vertical"
    schema_file: str = Field("", alias="schema")
    model: Literal["gbdt", "scorecard"] = "gbdt"
    seed: int = 42
    # At most half: a feature party answers for at most half of the aligned rows as test rows.
    test_fraction: float = Field(0.2, alias="test-fraction", gt=0, le=0.5)
    # random: test rows drawn per row from the seed; time: the latest aligned rows by the
    # label party's time column (out-of-time validation).
    split: Literal["random", "time"] = "random"
    synthetic_rows: int = Field(30_000, alias="synthetic-rows", ge=200)
    trees: int = Field(30, ge=1, le=1000)
    max_depth: int = Field(3, alias="max-depth", ge=1, le=8)
    # HEU's bucket sums take codes below 127: bins, special values and missing together.
    max_bins: int = Field(32, alias="max-bins", ge=2, le=100)
    tree_learning_rate: float = Field(0.3, alias="tree-learning-rate", gt=0, le=1)
    min_child_weight: float = Field(1.0, alias="min-child-weight", ge=0)
    reg_lambda: float = Field(1.0, alias="reg-lambda", ge=0)
    min_split_loss: float = Field(0.0, alias="min-split-loss", ge=0)
    max_categories: int = Field(50, alias="max-categories", ge=2)
    min_category_count: int = Field(1, alias="min-category-count", ge=1)
    label_only_trees: int = Field(0, alias="label-only-trees", ge=0)
    # Fairness across the label party's protected attributes, at the service policy's
    # cut-offs, as a horizontal run (`RunSettings`' keys and defaults).
    fairness: bool = True
    fairness_approve: int = Field(680, alias="fairness-approve", ge=350, le=950)
    fairness_decline: int = Field(600, alias="fairness-decline", ge=350, le=950)
    # Set by the simulation: where the parties write their parts, and their keys.
    out_dir: str = Field("", alias="out-dir")
    keys_dir: str = Field("", alias="keys-dir")
    trust_file: str = Field("", alias="trust-file")
    parties: int = Field(2, ge=2, le=64)  # nodes the coordinator waits for
    timeout: float = Field(600.0, gt=0)  # seconds a node may take for one step

    @model_validator(mode="after")
    def _cutoffs_ordered(self) -> VerticalSettings:
        if self.fairness_decline > self.fairness_approve:
            raise ValueError("fairness-decline must not be above fairness-approve")
        return self

    def to_run_config(self) -> dict[str, int | float | str | bool]:
        return dict(self.model_dump(by_alias=True))

    @classmethod
    def from_run_config(cls, config: dict[str, Any]) -> VerticalSettings:
        return cls.model_validate(config)

    @property
    def trust_path(self) -> Path:
        """The run's trust store: `trust-file`, or the one of `keys-dir`'s key set."""
        return Path(self.trust_file) if self.trust_file else Path(self.keys_dir) / TRUST_FILE

    @property
    def generated_keys(self) -> bool:
        """Keys the coordinator makes for this run under OUT (`flwr run .` simulations)."""
        return self.keys_dir.endswith(f"/{RUN_KEYS_SUBDIR}") and not self.trust_file

    @classmethod
    def of(cls, config: dict[str, Any], run_id: int) -> VerticalSettings:
        """The settings of run `run_id`: as `jointcredit simulate` sets them (`parties`
        given), or from the app's fused run config (`flwr run`, `jointcredit link run`), its
        out-dir defaulting to ~/.jointcredit/runs/<run id>, and, with no keys given (a local
        `flwr run .` simulation), keys the coordinator makes there for this run."""
        if "parties" in config:
            return cls.from_run_config(config)
        settings = cls.from_app_config(config)
        out = Path(settings.out_dir) if settings.out_dir else default_run_dir(run_id)
        update: dict[str, Any] = {"out_dir": str(out)}
        if not settings.keys_dir and not settings.trust_file:
            update["keys_dir"] = str(out / RUN_KEYS_SUBDIR)
        return settings.model_copy(update=update)

    @classmethod
    def from_app_config(cls, config: dict[str, Any]) -> VerticalSettings:
        """A vertical run's settings from the app's run config (`[tool.flwr.app.config]` with
        the run's overrides, as `flwr run` fuses them): the keys the run set (other than their
        horizontal default) that a vertical run takes; a key it leaves at the app's default
        takes the vertical default (30 trees of depth 3 on 32 bins). A horizontal-only
        setting, or a bad value, raises `SettingsError` naming it."""
        settings = RunSettings.from_run_config(config)  # every key typed and checked
        if settings.layout != VERTICAL:
            raise SettingsError(f"layout: {settings.layout}, not {VERTICAL}")
        changed = RunSettings.changed(config)
        refused = sorted(set(changed) & HORIZONTAL_ONLY)
        if refused:
            raise SettingsError(f"not a setting of vertical runs: {', '.join(refused)}")
        values: dict[str, Any] = {k: x for k, x in changed.items() if k in _VERTICAL_KEYS}
        if settings.data_dir:
            values["dataset"] = settings.data_dir
        values.update(parties=settings.min_nodes, timeout=settings.round_timeout)
        if settings.model not in ("gbdt", "auto", "scorecard"):
            raise SettingsError(f"model: {settings.model} (vertical runs train gbdt or scorecard)")
        values.pop("model", None)
        if settings.model == "scorecard":
            if trees := sorted(set(changed) & TREE_KEYS):
                raise SettingsError(f"not a setting of vertical scorecards: {', '.join(trees)}")
            values["model"] = "scorecard"
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise SettingsError(f"invalid vertical run config: {problems}") from exc


_VERTICAL_KEYS = frozenset(f.alias or name for name, f in VerticalSettings.model_fields.items()) - {
    "parties",
    "timeout",
}
# Keys of horizontal runs only: a vertical run that sets them is refused, not silently
# run without them.
HORIZONTAL_ONLY = frozenset(
    {
        "rounds", "strategy", "privacy", "aggregator", "attack", "attackers", "adversary",
        "faults", "resume", "personal-trees", "finetune-epochs",
        "personalization", "local-epochs", "batch-size", "learning-rate", "optimizer",
        "proximal-mu", "epsilon", "noise-multiplier", "secagg-shares",
    }
)  # fmt: skip


# The trees' settings: a vertical scorecard run refuses them rather than ignoring them.
TREE_KEYS = frozenset(
    {"trees", "max-depth", "tree-learning-rate", "min-child-weight", "reg-lambda",
     "min-split-loss", "label-only-trees"}
)  # fmt: skip


def is_vertical(run_config: dict[str, Any]) -> bool:
    return run_config.get(LAYOUT) == VERTICAL


def content(
    step: int, action: str, arrays: dict[str, np.ndarray] | None = None, /, **values: Any
) -> RecordDict:
    """A vertical message's (or reply's) content: its step, action, values and arrays."""
    out = RecordDict(
        {
            protocol.CONFIG: ConfigRecord({"server-round": step}),
            REQUEST: ConfigRecord({ACTION: action, **values}),
        }
    )
    if arrays:
        out[PAYLOAD] = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})
    return out


def request(content: RecordDict) -> ConfigRecord:
    record = content.get(REQUEST)
    if not isinstance(record, ConfigRecord) or not isinstance(record.get(ACTION), str):
        raise protocol.ProtocolError("a vertical message without its request record")
    return record


def arrays(content: RecordDict) -> dict[str, np.ndarray]:
    record = content.get(PAYLOAD)
    if record is None:
        return {}
    if not isinstance(record, ArrayRecord):
        raise protocol.ProtocolError("the payload is not an ArrayRecord")
    return {k: v.numpy() for k, v in record.items()}


def relay(reply: RecordDict, into: RecordDict, party: str) -> None:
    """Copy a feature party's reply, signature included, into a message to the label party."""
    for name, record in reply.items():
        into[f"{RELAY_PREFIX}{party}/{name}"] = record


def relayed(content: RecordDict, party: str) -> RecordDict:
    """The reply of `party` a message relays, as it sent it."""
    prefix = f"{RELAY_PREFIX}{party}/"
    return RecordDict(
        {k.removeprefix(prefix): r for k, r in content.items() if k.startswith(prefix)}
    )


def request_digest(content: RecordDict) -> bytes:
    """The SHA-256 of a message's content as signed (every item's digest: its step, action,
    addressee, each array's bytes): the label party's of its request, the feature party's
    of the request it verified, equal only if the request is the same."""
    h = hashlib.sha256(b"jointcredit-vertical-request/1\x00")
    for name, digest in content_parts(content).items():  # the signature record left out
        h.update(len(name).to_bytes(8, "big") + name.encode() + digest)
    return h.digest()


def relayed_parties(content: RecordDict) -> list[str]:
    return sorted({k.split("/")[1] for k in content if k.startswith(RELAY_PREFIX)})


def content_bytes(content: RecordDict) -> int:
    """What a message's content weighs on the wire, about: its arrays' bytes and its
    config values' (for `bytes_sent`)."""
    total = 0
    for record in content.values():
        if isinstance(record, ArrayRecord):
            total += sum(len(a.data) for a in record.values())
        elif isinstance(record, ConfigRecord):
            total += sum(len(str(k)) + len(repr(x)) for k, x in record.items())
    return total
